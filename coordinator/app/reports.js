// The reports page of the approval app: volume per day and asset, fees
// paid, approval latency, and blocked or high-risk withdrawals by hour and
// weekday, drawn as SVG from /app/reports/{name}, each with its table and a
// CSV download of the same report. No third-party code: the charts are a
// few SVG rectangles built here.
'use strict';

const CustosReports = (() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      e.setAttribute(k, String(v));
    }
    for (const c of children) {
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // Base units (a decimal string) in units, exact: "1500000000000000000", 18 -> "1.5".
  function units(base, decimals) {
    const neg = String(base).startsWith('-');
    const digits = String(base).replace(/^-/, '').padStart(decimals + 1, '0');
    const whole = digits.slice(0, digits.length - decimals);
    const frac = decimals ? digits.slice(digits.length - decimals).replace(/0+$/, '') : '';
    return (neg ? '-' : '') + whole + (frac ? `.${frac}` : '');
  }

  // For bar heights only: the value as a float.
  const approx = (base, decimals) => Number(units(base, decimals));

  // One bar chart: `bars` = [{label, value, title, data}] in order.
  function barChart(bars, opts) {
    const w = 640;
    const h = 200;
    const pad = { l: 56, r: 8, t: 8, b: 34 };
    const max = Math.max(...bars.map((b) => b.value), 0) || 1;
    const chart = svg('svg', { viewBox: `0 0 ${w} ${h}`, class: 'chart', role: 'img', 'aria-label': opts.title });
    const iw = w - pad.l - pad.r;
    const ih = h - pad.t - pad.b;
    chart.append(svg('line', { x1: pad.l, y1: pad.t + ih, x2: w - pad.r, y2: pad.t + ih, class: 'axis' }));
    chart.append(svg('text', { x: pad.l - 6, y: pad.t + 10, 'text-anchor': 'end', class: 'tick' }, opts.fmt(max)));
    chart.append(svg('text', { x: pad.l - 6, y: pad.t + ih, 'text-anchor': 'end', class: 'tick' }, '0'));
    const step = bars.length ? iw / bars.length : iw;
    bars.forEach((b, i) => {
      const bh = Math.max(1, (b.value / max) * ih);
      const bw = Math.max(1, Math.min(step * 0.8, 48));
      const rect = svg('rect', {
        x: pad.l + i * step + (step - bw) / 2,
        y: pad.t + ih - bh,
        width: bw,
        height: bh,
        class: `bar ${opts.barClass || ''}`,
      });
      for (const [k, v] of Object.entries(b.data || {})) {
        rect.setAttribute(`data-${k}`, v);
      }
      rect.append(svg('title', {}, b.title));
      chart.append(rect);
      if (bars.length <= 16 || i % Math.ceil(bars.length / 16) === 0) {
        chart.append(svg('text', { x: pad.l + i * step + step / 2, y: h - 18, 'text-anchor': 'middle', class: 'tick' }, b.label));
      }
    });
    if (!bars.length) {
      chart.append(svg('text', { x: w / 2, y: h / 2, 'text-anchor': 'middle', class: 'empty' }, 'no data in this range'));
    }
    return chart;
  }

  // The 7 x 24 grid: cell shade = flagged / the busiest cell's flagged.
  function heatMap(rows, col) {
    const cell = 22;
    const pad = { l: 40, t: 18 };
    const chart = svg('svg', { viewBox: `0 0 ${pad.l + 24 * cell + 4} ${pad.t + 7 * cell + 4}`, class: 'chart heat', role: 'img', 'aria-label': 'blocked and high-risk withdrawals by weekday and hour (UTC)' });
    const at = new Map(rows.map((r) => [`${r[col.weekday]}-${r[col.hour]}`, r]));
    const max = Math.max(...rows.map((r) => r[col.flagged]), 0) || 1;
    for (let hr = 0; hr < 24; hr += 3) {
      chart.append(svg('text', { x: pad.l + hr * cell + cell / 2, y: 12, 'text-anchor': 'middle', class: 'tick' }, String(hr).padStart(2, '0')));
    }
    for (let d = 1; d <= 7; d++) {
      chart.append(svg('text', { x: pad.l - 6, y: pad.t + (d - 1) * cell + 15, 'text-anchor': 'end', class: 'tick' }, WEEKDAYS[d - 1]));
      for (let hr = 0; hr < 24; hr++) {
        const r = at.get(`${d}-${hr}`);
        const flagged = r ? r[col.flagged] : 0;
        const rect = svg('rect', {
          x: pad.l + hr * cell,
          y: pad.t + (d - 1) * cell,
          width: cell - 2,
          height: cell - 2,
          class: flagged ? 'cell hot' : 'cell',
          'fill-opacity': flagged ? (0.25 + 0.75 * (flagged / max)).toFixed(2) : 1,
          'data-weekday': d,
          'data-hour': hr,
          'data-flagged': flagged,
        });
        const what = r
          ? `${r[col.count]} withdrawals, ${r[col.blocked]} blocked, ${r[col.high_risk]} high-risk`
          : 'none';
        rect.append(svg('title', {}, `${WEEKDAYS[d - 1]} ${String(hr).padStart(2, '0')}:00 UTC: ${what}`));
        chart.append(rect);
      }
    }
    return chart;
  }

  function table(report, el) {
    const t = el('table', { class: 'report-table', 'data-report': report.name });
    const head = el('tr', {});
    for (const c of report.columns) {
      head.append(el('th', {}, c));
    }
    t.append(el('thead', {}, head));
    const body = el('tbody', {});
    for (const r of report.rows) {
      const tr = el('tr', {});
      for (const v of r) {
        tr.append(el('td', {}, v === null ? '' : v));
      }
      body.append(tr);
    }
    t.append(body);
    return t;
  }

  const index = (report) => Object.fromEntries(report.columns.map((c, i) => [c, i]));

  // Per-asset amount charts (volume, fees): one chart per asset.
  function amountCharts(report, el, amountCol, countCol, noun) {
    const c = index(report);
    const box = el('div', {});
    const assets = [...new Set(report.rows.map((r) => r[c.asset]))];
    for (const asset of assets) {
      const dec = report.decimals[asset] ?? 0;
      const rows = report.rows.filter((r) => r[c.asset] === asset);
      const bars = rows.map((r) => ({
        label: r[c.day].slice(5),
        value: approx(r[c[amountCol]], dec),
        title: `${r[c.day]}: ${units(r[c[amountCol]], dec)} ${asset} (${r[c[amountCol]]} base units), ${r[c[countCol]]} ${noun}`,
        data: { day: r[c.day], asset, amount: r[c[amountCol]] },
      }));
      box.append(el('h4', {}, `${asset} (units; ${dec} decimals)`));
      box.append(barChart(bars, { title: `${asset} per day`, fmt: (v) => `${v}` }));
    }
    if (!assets.length) {
      box.append(barChart([], { title: 'none', fmt: (v) => `${v}` }));
    }
    return box;
  }

  function latencyChart(report, el) {
    const c = index(report);
    const bars = report.rows.map((r) => ({
      label: r[c.day].slice(5),
      value: (r[c.p50_ms] || 0) / 1000,
      title: `${r[c.day]}: ${r[c.count]} quorums, p50 ${(r[c.p50_ms] / 1000).toFixed(1)} s, p95 ${(r[c.p95_ms] / 1000).toFixed(1)} s, max ${(r[c.max_ms] / 1000).toFixed(1)} s`,
      data: { day: r[c.day], p50: r[c.p50_ms] },
    }));
    const box = el('div', {});
    box.append(el('h4', {}, 'request to quorum, p50 per day (seconds)'));
    box.append(barChart(bars, { title: 'approval latency', fmt: (v) => `${v.toFixed(1)} s`, barClass: 'latency' }));
    return box;
  }

  // What each chart on the page shows: report, grouping, drawing.
  const CHARTS = [
    { id: 'volume', name: 'volume', group: 'day', title: 'Volume per day and asset (settled withdrawals)', draw: (r, el) => amountCharts(r, el, 'amount', 'count', 'withdrawals') },
    { id: 'fees', name: 'fees', group: 'day', title: 'Network fees paid per day', draw: (r, el) => amountCharts(r, el, 'amount', 'entries', 'fee postings') },
    { id: 'latency', name: 'approval-latency', group: 'day', title: 'Approval latency', draw: latencyChart },
    {
      id: 'heatmap',
      name: 'heatmap',
      group: '',
      title: 'Blocked and high-risk withdrawals by weekday and hour (UTC)',
      draw: (r, el) => {
        const box = el('div', {});
        box.append(el('h4', {}, 'darker: more blocked, cancelled or high-risk (score ≥ 70) withdrawals'));
        box.append(heatMap(r.rows, index(r)));
        return box;
      },
    },
  ];

  // Draws every chart into `root` for [from, to] (YYYY-MM-DD, to inclusive).
  async function render(root, from, to, api, el) {
    while (root.firstChild) {
      root.removeChild(root.firstChild);
    }
    for (const ch of CHARTS) {
      const q = new URLSearchParams({ from, to });
      if (ch.group) {
        q.set('group', ch.group);
      }
      const fig = el('figure', { id: `chart-${ch.id}`, 'data-report': ch.name });
      fig.append(el('figcaption', {}, ch.title));
      root.append(fig);
      try {
        const report = await api('GET', `/app/reports/${ch.name}?${q}`);
        fig.append(ch.draw(report, el));
        const link = el('a', { href: `/app/reports/${ch.name}/csv?${q}`, class: 'csv', download: '' }, 'Download CSV');
        fig.append(link);
        const details = el('details', {}, el('summary', {}, `Table (${report.rows.length} rows)`));
        details.append(table(report, el));
        fig.append(details);
        fig.setAttribute('data-rows', String(report.rows.length));
      } catch (e) {
        fig.append(el('p', { class: 'alert' }, `${ch.name}: ${e.message}`));
      }
    }
  }

  return { render, units };
})();
