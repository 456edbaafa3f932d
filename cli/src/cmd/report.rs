//! `custos report NAME`: reports from the coordinator's REST API
//! (`GET /v1/reports/{name}` on its HTTP API, TLS), printed as a table, CSV
//! or JSON. Also the API client `custos ledger` shares.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use super::conn::block_on;

/// Where the coordinator's HTTP API is and which token to present.
#[derive(clap::Args, Clone, Debug)]
pub struct HttpArgs {
    /// Dev cluster directory: its cluster.json gives the HTTP API address,
    /// the CA and the tokens.
    #[arg(long, value_name = "DIR", default_value = custos_devkit::DEFAULT_DIR)]
    pub cluster: PathBuf,
    /// Coordinator HTTP API URL (`https://host:port`; `http://` only for a
    /// dev coordinator with `[dev] plain_http`), instead of --cluster; needs
    /// --token-file, and --ca for https.
    #[arg(long = "http", value_name = "URL", requires = "token_file")]
    pub http_url: Option<String>,
    /// File holding your API bearer token (with --http).
    #[arg(long, value_name = "FILE", requires = "http_url")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that issued the coordinator's server
    /// certificate, checked against the URL's host (with --http https://).
    #[arg(long, value_name = "FILE", requires = "http_url")]
    pub ca: Option<PathBuf>,
    /// Which generated API client of the dev cluster to act as [default: the
    /// command's role: auditor for reads, admin for writes].
    #[arg(long, value_name = "ID", conflicts_with = "http_url")]
    pub client: Option<String>,
}

/// A coordinator REST endpoint and a token.
pub struct Api {
    target: custos_devkit::HttpTarget,
    token: zeroize::Zeroizing<String>,
}

impl HttpArgs {
    /// Resolves the address and the token (`default_client` in a dev cluster).
    pub fn api(&self, default_client: &str) -> anyhow::Result<Api> {
        let (target, token_file) = match (&self.http_url, &self.token_file) {
            (Some(url), Some(t)) => (
                custos_devkit::HttpTarget::from_url(url, self.ca.as_deref())
                    .with_context(|| format!("--http {url} (with --ca FILE for https)"))?,
                t.clone(),
            ),
            _ => {
                let layout = custos_devkit::ClusterLayout::load(&self.cluster).with_context(|| {
                    format!(
                        "--cluster {}: no dev cluster there (run `custos dev up`, or use --http URL --token-file FILE)",
                        self.cluster.display()
                    )
                })?;
                let id = self.client.as_deref().unwrap_or(default_client);
                let token_file = if id == custos_devkit::ADMIN_CLIENT {
                    layout.coordinator.admin_token_file.clone()
                } else {
                    layout
                        .client(id)
                        .map(|c| c.token_file.clone())
                        .ok_or_else(|| anyhow!("no API client {id:?} in the dev cluster"))?
                };
                (
                    custos_devkit::HttpTarget::coordinator_api(&layout)?,
                    token_file,
                )
            }
        };
        let token = zeroize::Zeroizing::new(
            std::fs::read_to_string(&token_file)
                .with_context(|| format!("token file {}", token_file.display()))?
                .trim()
                .to_owned(),
        );
        Ok(Api { target, token })
    }
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    /// `method path` with an optional JSON body; returns the JSON answer, or
    /// the server's `error` for a non-2xx status.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let auth = zeroize::Zeroizing::new(format!("Bearer {}", self.token.as_str()));
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Accept", "application/json"),
        ];
        if !body.is_empty() || method == "POST" {
            headers.push(("Content-Type", "application/json"));
        }
        let url = self.target.url();
        let r = self
            .target
            .request(method, path, &headers, &body)
            .await
            .with_context(|| format!("{url}{path} (is the coordinator running?)"))?;
        let json: Value = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body.clone()));
        if !(200..300).contains(&r.status) {
            let msg = json
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| r.body.trim().to_owned(), str::to_owned);
            let hint = match (r.status, r.header("retry-after")) {
                (401, _) => " (check the token: --client or --token-file)".to_owned(),
                (403, _) => {
                    " (this API client lacks the role: pick another with --client)".to_owned()
                }
                (404, _) if msg.is_empty() => {
                    " (the coordinator is too old for this endpoint)".to_owned()
                }
                (429 | 503, Some(after)) => format!(" (retry after {after} s)"),
                _ => String::new(),
            };
            bail!("{method} {path}: HTTP {}: {msg}{hint}", r.status);
        }
        Ok(json)
    }
}

/// Arguments of `custos report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Report: volume, states, approval-latency, blocked, risk, fees, heatmap.
    name: String,
    /// First day (YYYY-MM-DD, UTC), RFC 3339 time or Unix ms [default: the beginning].
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// Last day, inclusive (YYYY-MM-DD, UTC), or an exclusive RFC 3339 time / Unix ms [default: now].
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
    /// Group rows by wallet, asset or day.
    #[arg(long, value_parser = ["wallet", "asset", "day"])]
    group: Option<String>,
    /// Print CSV.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    http: HttpArgs,
}

/// Runs `custos report`.
pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let api = args.http.api(custos_devkit::AUDITOR_CLIENT)?;
    let mut query = Vec::new();
    for (k, v) in [
        ("from", &args.from),
        ("to", &args.to),
        ("group", &args.group),
    ] {
        if let Some(v) = v {
            query.push(format!("{k}={}", encode(v)));
        }
    }
    let path = format!(
        "/v1/reports/{}{}{}",
        encode(&args.name),
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let report = block_on(api.call("GET", &path, None))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (columns, rows) = table_of(&report)?;
    if args.csv {
        print!("{}", csv(&columns, &rows));
    } else {
        print!("{}", table(&columns, &rows));
        if rows.is_empty() {
            println!("(no rows)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The columns and the rows (as text) of a `{columns, rows}` JSON table.
pub fn table_of(report: &Value) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let columns: Vec<String> = report
        .get("columns")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("answer has no columns"))?
        .iter()
        .map(cell)
        .collect();
    let rows = report
        .get("rows")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("answer has no rows"))?
        .iter()
        .map(|r| {
            r.as_array()
                .map(|r| r.iter().map(cell).collect())
                .unwrap_or_default()
        })
        .collect();
    Ok((columns, rows))
}

/// An aligned text table.
pub fn table(columns: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(columns);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// RFC 4180 CSV (the coordinator's report downloads use the same writer).
pub use custos_service::csv::table as csv;
