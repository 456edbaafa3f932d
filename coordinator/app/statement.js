// Decodes the canonical approval statement (policy/src/statement.rs,
// FORMATS.md) in the browser and computes the passkey challenge from it,
// so the page shows what the passkey signs from the very bytes it signs,
// not from the server's description of them (which the page compares).
'use strict';

const CustosStatement = (() => {
  const MAGIC = 'custos.approval-statement';
  const DOMAIN = 'custos.approval.v1\u0000';
  const VERDICTS = { approve: 1, reject: 2, cancel: 3 };
  const utf8 = new TextDecoder('utf-8', { fatal: true });

  function fromHex(text) {
    if (typeof text !== 'string' || text.length % 2 !== 0 || /[^0-9a-f]/i.test(text)) {
      throw new Error('statement: not hex');
    }
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) {
      out[i] = parseInt(text.substr(i * 2, 2), 16);
    }
    return out;
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function reader(bytes) {
    let at = 0;
    const take = (n, what) => {
      if (at + n > bytes.length) {
        throw new Error(`statement: truncated in ${what}`);
      }
      const s = bytes.subarray(at, at + n);
      at += n;
      return s;
    };
    const u32 = (what) => {
      const b = take(4, what);
      return ((b[0] << 24) >>> 0) + (b[1] << 16) + (b[2] << 8) + b[3];
    };
    const big = (n, what) => take(n, what).reduce((acc, b) => (acc << 8n) + BigInt(b), 0n);
    return {
      take,
      str(what) {
        const n = u32(what);
        if (n < 1 || n > 256) {
          throw new Error(`statement: ${what} must be 1..=256 bytes`);
        }
        return utf8.decode(take(n, what));
      },
      bytes(what, max) {
        const n = u32(what);
        if (n > max) {
          throw new Error(`statement: ${what} is ${n} bytes, the limit is ${max}`);
        }
        return take(n, what);
      },
      u128(what) {
        return big(16, what);
      },
      i64(what) {
        const v = big(8, what);
        return v >= 1n << 63n ? v - (1n << 64n) : v;
      },
      done() {
        if (at !== bytes.length) {
          throw new Error(`statement: ${bytes.length - at} trailing bytes`);
        }
      },
    };
  }

  // The statement's fields; amounts as decimal strings of base units.
  function decode(hexText) {
    const bytes = fromHex(hexText);
    const r = reader(bytes);
    const magic = utf8.decode(r.take(MAGIC.length, 'magic'));
    if (magic !== MAGIC) {
      throw new Error('statement: not an approval statement (bad magic)');
    }
    const version = r.take(1, 'version')[0];
    if (version !== 1 && version !== 2) {
      throw new Error(`statement: unsupported version ${version}`);
    }
    const s = { version, bytes };
    s.withdrawal_id = r.str('withdrawal_id');
    s.chain = r.str('chain');
    s.asset = r.str('asset');
    s.source_wallet = r.str('source_wallet');
    if (version === 2) {
      s.source_path = r.str('source_path');
      s.source_address = r.str('source_address');
    }
    s.destination = r.str('destination');
    s.amount = r.u128('amount').toString();
    s.fee_cap = r.u128('fee_cap').toString();
    s.tx_digest = toHex(r.bytes('tx_digest', 1024));
    s.policy_hash = toHex(r.take(32, 'policy_hash'));
    s.rule_id = r.str('rule_id');
    s.expiry = Number(r.i64('expiry'));
    r.done();
    return s;
  }

  // SHA-256 of the signing message for `verdict`: the WebAuthn challenge
  // (custos_policy::passkey_challenge).
  async function challenge(bytes, verdict) {
    const v = VERDICTS[verdict];
    if (!v) {
      throw new Error(`unknown verdict ${verdict}`);
    }
    const domain = new TextEncoder().encode(DOMAIN);
    const msg = new Uint8Array(domain.length + 1 + bytes.length);
    msg.set(domain, 0);
    msg[domain.length] = v;
    msg.set(bytes, domain.length + 1);
    return new Uint8Array(await crypto.subtle.digest('SHA-256', msg));
  }

  return { decode, challenge, fromHex, toHex };
})();
