//! Field checks shared by the configuration kinds.
//!
//! Calico validates these kinds partly in Go (`validate:"..."` tags and struct validators) and
//! partly through the CRD schema (OpenAPI `pattern`/`enum`/`minimum`/`maxLength` and CEL rules),
//! which calicoctl also applies. Two quirks matter here:
//!
//! * `metav1.Duration` fields are re-rendered by Go (`90s` becomes `1m30s`) before the CRD
//!   pattern sees them, so the pattern is checked against Go's canonical rendering.
//! * Most duration patterns are written `^([0-9]+(\\.[0-9]+)?(ms|s|m|h))*$` inside a Go raw
//!   string, so the doubled backslash demands a literal backslash before the fraction: in
//!   effect only whole milliseconds (below one second) or whole seconds are accepted.

use std::net::IpAddr;

use crate::error::Errors;
use crate::validate;

// ---------------------------------------------------------------------------------------------
// Go durations
// ---------------------------------------------------------------------------------------------

const NS_PER_MS: i64 = 1_000_000;
const NS_PER_S: i64 = 1_000_000_000;

/// How Calico constrains one `metav1.Duration` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurationRule {
    /// Any Go duration, negative included (no CRD pattern on the field).
    Any,
    /// CRD pattern `^([0-9]+(\\.[0-9]+)?(ms|s|m|h))*$`: zero, whole milliseconds below one
    /// second, or whole seconds.
    Whole,
    /// CRD pattern `^([0-9]+(\.[0-9]+)?(ms|s|m|h))*$`: zero or at least one millisecond.
    Decimal,
    /// Any non-negative duration (Calico's `HealthTimeoutOverride` validator).
    NonNegative,
}

const U63: u64 = 1 << 63;

/// Parses a duration exactly as Go's `time.ParseDuration` does, returning nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid duration {s:?}");
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut v: u64 = 0;
        for c in rest[..int_len].bytes() {
            if v > U63 / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(c - b'0');
            if v > U63 {
                return Err(invalid());
            }
        }
        rest = &rest[int_len..];
        // Fraction.
        let mut frac: u64 = 0;
        let mut scale = 1.0_f64;
        let mut frac_len = 0;
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
            frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for c in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                if frac > (U63 - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = frac * 10 + u64::from(c - b'0');
                if y > U63 {
                    overflow = true;
                    continue;
                }
                frac = y;
                scale *= 10.0;
            }
            rest = &rest[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        // Unit.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(format!("missing unit in duration {s:?}"));
        }
        let unit: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        if v > U63 / unit {
            return Err(invalid());
        }
        v *= unit;
        if frac > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale))
            let add = (frac as f64 * (unit as f64 / scale)) as u64;
            v += add;
            if v > U63 {
                return Err(invalid());
            }
        }
        total += v;
        if total > U63 {
            return Err(invalid());
        }
    }
    if neg {
        return Ok(0_i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| invalid())
}

/// Renders nanoseconds as Go's `time.Duration.String` does (`1m30s`, `500ms`, `1.5µs`, `0s`).
pub fn format_go_duration(d: i64) -> String {
    let mut u = d.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0 => return "0s".to_string(),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "\u{b5}s"),
            _ => (6, "ms"),
        };
        let (frac, int) = fmt_frac(u, prec);
        out.push_str(&int.to_string());
        out.push_str(&frac);
        out.push_str(unit);
    } else {
        let (frac, int) = fmt_frac(u, 9);
        u = int;
        let secs = format!("{}{frac}s", u % 60);
        u /= 60;
        if u > 0 {
            let mins = u % 60;
            u /= 60;
            if u > 0 {
                out.push_str(&format!("{u}h"));
            }
            out.push_str(&format!("{mins}m"));
        }
        out.push_str(&secs);
    }
    if d < 0 {
        out.insert(0, '-');
    }
    out
}

/// Splits `v` into `v / 10^prec` and the fraction rendered as `.ddd` without trailing zeros.
fn fmt_frac(v: u64, prec: u32) -> (String, u64) {
    let p = 10u64.pow(prec);
    let frac = v % p;
    if frac == 0 {
        return (String::new(), v / p);
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (format!(".{}", digits.trim_end_matches('0')), v / p)
}

/// Rewrites a duration to Go's canonical rendering (what Calico stores); leaves invalid
/// values untouched for validation to report.
pub(crate) fn canonicalize_duration(v: &mut Option<String>) {
    if let Some(s) = v
        && let Ok(ns) = parse_go_duration(s)
    {
        *s = format_go_duration(ns);
    }
}

/// Validates a `metav1.Duration` field.
pub(crate) fn duration(errs: &mut Errors, field: &str, value: Option<&str>, rule: DurationRule) {
    let Some(s) = value else { return };
    let ns = match parse_go_duration(s) {
        Ok(ns) => ns,
        Err(e) => {
            errs.add(
                field,
                s,
                format!("{e}: expected a Go duration such as 90s, 5m, 1h30m or 500ms"),
            );
            return;
        }
    };
    let canonical = format_go_duration(ns);
    let ok = match rule {
        DurationRule::Any => true,
        DurationRule::NonNegative => ns >= 0,
        DurationRule::Whole => {
            ns == 0
                || (ns > 0 && ns < NS_PER_S && ns % NS_PER_MS == 0)
                || (ns >= NS_PER_S && ns % NS_PER_S == 0)
        }
        DurationRule::Decimal => ns == 0 || ns >= NS_PER_MS,
    };
    if !ok {
        let reason = match rule {
            DurationRule::NonNegative => "must not be negative".to_string(),
            DurationRule::Whole => format!(
                "Calico stores this as {canonical:?}, which does not match \
                 ^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))*$: use a non-negative whole number of \
                 milliseconds (below 1s) or of seconds"
            ),
            _ => format!(
                "Calico stores this as {canonical:?}, which does not match \
                 ^([0-9]+(\\.[0-9]+)?(ms|s|m|h))*$: use zero or a non-negative duration of at \
                 least 1ms"
            ),
        };
        errs.add(field, s, reason);
    }
}

/// Calico's `BPFConntrackTimeout` pattern: `^(([0-9]*(\.[0-9]*)?(ms|s|h|m|us)+)+|Auto)$`.
pub(crate) fn is_bpf_conntrack_timeout(s: &str) -> bool {
    if s == "Auto" {
        return true;
    }
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        // One group: digits, optional '.' and digits, then one or more units.
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        let units_start = i;
        while i < b.len() {
            match b[i] {
                b'm' | b's' | b'h' => i += 1,
                b'u' if b.get(i + 1) == Some(&b's') => i += 2,
                _ => break,
            }
        }
        if i == units_start {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Strings, enums and numbers
// ---------------------------------------------------------------------------------------------

/// A Go non-pointer `string` with `omitempty`: the empty string means "unset".
pub(crate) fn go_str(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// Drops `Some("")` (Go omits empty strings tagged `omitempty`).
pub(crate) fn drop_empty(v: &mut Option<String>) {
    if v.as_deref() == Some("") {
        *v = None;
    }
}

/// Exact (case-sensitive) enum check; `None` is accepted.
pub(crate) fn one_of(errs: &mut Errors, field: &str, v: Option<&str>, allowed: &[&str]) {
    if let Some(s) = v {
        validate::one_of(errs, field, s, allowed);
    }
}

/// Case-insensitive enum check (CRD patterns written `^(?i)(A|B)?$`); `None` is accepted.
pub(crate) fn one_of_ci(errs: &mut Errors, field: &str, v: Option<&str>, allowed: &[&str]) {
    if let Some(s) = v
        && !allowed.iter().any(|a| a.eq_ignore_ascii_case(s))
    {
        errs.add(
            field,
            s,
            format!("must be one of {} (case-insensitive)", allowed.join(", ")),
        );
    }
}

/// Inclusive integer range check; `None` is accepted.
pub(crate) fn int_range(errs: &mut Errors, field: &str, v: Option<i64>, min: i64, max: i64) {
    if let Some(n) = v
        && !(min..=max).contains(&n)
    {
        let reason = if max == i64::MAX {
            format!("must be at least {min}")
        } else {
            format!("must be between {min} and {max}")
        };
        errs.add(field, n, reason);
    }
}

/// CRD `maxLength` (counted in characters).
pub(crate) fn max_len(errs: &mut Errors, field: &str, v: Option<&str>, max: usize) {
    if let Some(s) = v
        && s.chars().count() > max
    {
        errs.add(field, s, format!("may be at most {max} characters"));
    }
}

/// `^[<allowed>]{min,max}$` over ASCII characters.
pub(crate) fn chars_match(s: &str, min: usize, max: usize, allowed: impl Fn(char) -> bool) -> bool {
    (min..=max).contains(&s.len()) && s.chars().all(allowed)
}

/// Calico's `interface` validator: `*` or `^[a-zA-Z0-9_.-]{1,15}$`.
pub(crate) fn is_interface(s: &str) -> bool {
    s == "*" || is_interface_name(s)
}

/// Calico's `interfaceRegex`: `^[a-zA-Z0-9_.-]{1,15}$`.
pub(crate) fn is_interface_name(s: &str) -> bool {
    chars_match(s, 1, 15, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
    })
}

/// Calico's `ifaceFilter` validator: `^[a-zA-Z0-9:._+-]{1,15}$` (`+` is the iptables wildcard).
pub(crate) fn is_iface_filter(s: &str) -> bool {
    chars_match(s, 1, 15, |c| {
        c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '+' | '-')
    })
}

/// Calico's `prometheusHost` validator: `^[a-zA-Z0-9:._+-]{1,64}$`.
pub(crate) fn is_prometheus_host(s: &str) -> bool {
    chars_match(s, 1, 64, |c| {
        c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '+' | '-')
    })
}

/// A CIDR or bare IP (Calico's `cnet.ParseCIDROrIP`).
pub(crate) fn cidr_list(errs: &mut Errors, field: &str, list: Option<&[String]>, v4_only: bool) {
    let Some(list) = list else { return };
    errs.at(field, |errs| {
        for (i, s) in list.iter().enumerate() {
            errs.idx(i, |errs| match validate::parse_cidr(s) {
                None => errs.add("", s, "not a valid CIDR or IP address"),
                Some(net) if v4_only && !matches!(net.addr(), IpAddr::V4(_)) => {
                    errs.add("", s, "must be an IPv4 CIDR");
                }
                Some(_) => {}
            });
        }
    });
}

/// An IP address of the given family (CEL `isIP(x) && ip(x).family() == N`).
pub(crate) fn ip_of_family(errs: &mut Errors, field: &str, v: Option<&str>, v6: bool) {
    let Some(s) = v else { return };
    let family = if v6 { "IPv6" } else { "IPv4" };
    match s.parse::<IpAddr>() {
        Err(_) => errs.add(
            field,
            s,
            format!("is not a valid IP address (expected an {family} address)"),
        ),
        Ok(IpAddr::V4(_)) if !v6 => {}
        Ok(IpAddr::V6(a)) if v6 && a.to_ipv4_mapped().is_none() => {}
        Ok(_) => errs.add(field, s, format!("must be a valid {family} address")),
    }
}

/// Calico's `keyValueList` validator together with the CRD pattern on the same field:
/// comma-separated `key=value` items (a trailing comma is allowed), keys `[A-Za-z0-9_]+`.
pub(crate) fn key_value_list(
    errs: &mut Errors,
    field: &str,
    v: Option<&str>,
    value_ok: impl Fn(&str) -> bool,
    what: &str,
) {
    let Some(s) = v else { return };
    let items: Vec<&str> = s.split(',').collect();
    let last = items.len() - 1;
    for (i, item) in items.iter().enumerate() {
        if item.is_empty() && i == last && i > 0 {
            continue;
        }
        let ok = item.split_once('=').is_some_and(|(k, val)| {
            !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && value_ok(val)
        });
        if !ok {
            errs.add(
                field,
                s,
                format!("item {item:?} is invalid: expected a comma-separated list of key={what}"),
            );
            return;
        }
    }
}

/// Validates a regular-expression field.
pub(crate) fn regexp(errs: &mut Errors, field: &str, v: Option<&str>) {
    if let Some(s) = v
        && let Err(e) = re2_syntax(s)
    {
        errs.add(field, s, format!("not a valid regular expression: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// RE2 syntax (Go's regexp.Compile)
// ---------------------------------------------------------------------------------------------

/// Checks `re` against Go's RE2 syntax: balanced groups and classes, group flags, escapes,
/// class ranges and repetition operators (including Go's nested-repetition and 1000-count
/// limits). Unicode class names after `\p` are not checked.
pub(crate) fn re2_syntax(re: &str) -> Result<(), String> {
    #[derive(PartialEq)]
    enum Prev {
        Nothing,
        Atom,
        Repeat,
    }
    let c: Vec<char> = re.chars().collect();
    let mut i = 0;
    let mut depth = 0usize;
    let mut prev = Prev::Nothing;
    while i < c.len() {
        match c[i] {
            '\\' => {
                i = re2_escape(&c, i, false)?.0;
                prev = Prev::Atom;
            }
            '[' => {
                i = re2_class(&c, i)?;
                prev = Prev::Atom;
            }
            '(' if c.get(i + 1) == Some(&'?') => {
                let mut j = i + 2;
                let named = match (c.get(j), c.get(j + 1)) {
                    (Some('P'), Some('<')) => Some(j + 2),
                    (Some('<'), _) => Some(j + 1),
                    _ => None,
                };
                if let Some(start) = named {
                    let end = c[start..]
                        .iter()
                        .position(|&ch| ch == '>')
                        .map(|p| start + p)
                        .ok_or("invalid named capture")?;
                    let name = &c[start..end];
                    if name.is_empty() || !name.iter().all(|ch| ch.is_alphanumeric() || *ch == '_')
                    {
                        return Err("invalid named capture".into());
                    }
                    depth += 1;
                    prev = Prev::Nothing;
                    i = end + 1;
                    continue;
                }
                let mut neg = false;
                let mut saw_flag = false;
                loop {
                    match c.get(j) {
                        Some('i' | 'm' | 's' | 'U') => saw_flag = true,
                        Some('-') if !neg => {
                            neg = true;
                            saw_flag = false;
                        }
                        Some(':' | ')') if !neg || saw_flag => break,
                        _ => return Err("invalid or unsupported Perl syntax".into()),
                    }
                    j += 1;
                }
                if c[j] == ':' {
                    depth += 1;
                    prev = Prev::Nothing;
                }
                // A flags-only group `(?i)` leaves the previous item in place.
                i = j + 1;
            }
            '(' => {
                depth += 1;
                prev = Prev::Nothing;
                i += 1;
            }
            ')' => {
                if depth == 0 {
                    return Err("unexpected )".into());
                }
                depth -= 1;
                prev = Prev::Atom;
                i += 1;
            }
            '|' => {
                prev = Prev::Nothing;
                i += 1;
            }
            op @ ('*' | '+' | '?' | '{') => {
                let len = if op == '{' {
                    match re2_repeat(&c[i..])? {
                        Some(len) => len,
                        None => {
                            // Not a well-formed {n,m}: a literal '{'.
                            prev = Prev::Atom;
                            i += 1;
                            continue;
                        }
                    }
                } else {
                    1
                };
                match prev {
                    Prev::Nothing => {
                        return Err(format!("missing argument to repetition operator {op}"));
                    }
                    Prev::Repeat => return Err(format!("invalid nested repetition operator {op}")),
                    Prev::Atom => {}
                }
                i += len;
                if c.get(i) == Some(&'?') {
                    i += 1;
                }
                prev = Prev::Repeat;
            }
            _ => {
                prev = Prev::Atom;
                i += 1;
            }
        }
    }
    if depth > 0 {
        return Err("missing closing )".into());
    }
    Ok(())
}

/// `{n}`, `{n,}` or `{n,m}` at the start of `c`: its length, `None` if not of that form.
fn re2_repeat(c: &[char]) -> Result<Option<usize>, String> {
    let mut i = 1;
    let num = |i: &mut usize| -> Option<u32> {
        let start = *i;
        while *i < c.len() && c[*i].is_ascii_digit() {
            *i += 1;
        }
        if *i == start {
            return None;
        }
        Some(
            c[start..*i]
                .iter()
                .collect::<String>()
                .parse()
                .unwrap_or(u32::MAX),
        )
    };
    let Some(min) = num(&mut i) else {
        return Ok(None);
    };
    let mut max = Some(min);
    if c.get(i) == Some(&',') {
        i += 1;
        max = if c.get(i) == Some(&'}') {
            None
        } else {
            match num(&mut i) {
                Some(m) => Some(m),
                None => return Ok(None),
            }
        };
    }
    if c.get(i) != Some(&'}') {
        return Ok(None);
    }
    if min > 1000 || max.is_some_and(|m| m > 1000 || m < min) {
        return Err("invalid repeat count".into());
    }
    Ok(Some(i + 1))
}

/// An escape at `c[i] == '\\'`: the index after it and, for single characters, their value.
fn re2_escape(c: &[char], i: usize, in_class: bool) -> Result<(usize, Option<char>), String> {
    let Some(&e) = c.get(i + 1) else {
        return Err("trailing backslash at end of expression".into());
    };
    let bad = || Err(format!("invalid escape sequence \\{e}"));
    let j = i + 2;
    match e {
        // A lone \1-\7 would be a backreference, which RE2 does not support.
        '1'..='7' if !c.get(j).is_some_and(|ch| ('0'..='7').contains(ch)) => bad(),
        '0'..='7' => {
            let mut end = j;
            while end < c.len() && end < j + 2 && ('0'..='7').contains(&c[end]) {
                end += 1;
            }
            let v = u32::from_str_radix(&c[i + 1..end].iter().collect::<String>(), 8).unwrap_or(0);
            Ok((end, char::from_u32(v)))
        }
        'x' => {
            if c.get(j) == Some(&'{') {
                let end = c[j..]
                    .iter()
                    .position(|&ch| ch == '}')
                    .map(|p| j + p)
                    .ok_or("invalid escape sequence \\x{")?;
                let hex: String = c[j + 1..end].iter().collect();
                let v = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|v| *v <= 0x10_FFFF && !hex.is_empty());
                match v {
                    Some(v) => Ok((end + 1, char::from_u32(v))),
                    None => bad(),
                }
            } else {
                let hex: String = c
                    .get(j..j + 2)
                    .map(|s| s.iter().collect())
                    .unwrap_or_default();
                match u32::from_str_radix(&hex, 16) {
                    Ok(v) if hex.len() == 2 => Ok((j + 2, char::from_u32(v))),
                    _ => bad(),
                }
            }
        }
        'a' => Ok((j, Some('\u{7}'))),
        'f' => Ok((j, Some('\u{c}'))),
        'n' => Ok((j, Some('\n'))),
        'r' => Ok((j, Some('\r'))),
        't' => Ok((j, Some('\t'))),
        'v' => Ok((j, Some('\u{b}'))),
        'd' | 'D' | 's' | 'S' | 'w' | 'W' => Ok((j, None)),
        'b' | 'B' | 'A' | 'z' if !in_class => Ok((j, None)),
        'p' | 'P' => match c.get(j) {
            Some('{') => {
                let end = c[j..].iter().position(|&ch| ch == '}').map(|p| j + p);
                match end {
                    Some(end) if end > j + 1 => Ok((end + 1, None)),
                    _ => Err("invalid character class range".into()),
                }
            }
            Some(_) => Ok((j + 1, None)),
            None => Err("invalid character class range".into()),
        },
        'Q' if !in_class => {
            let end = (j..c.len().saturating_sub(1)).find(|&k| c[k] == '\\' && c[k + 1] == 'E');
            Ok((end.map_or(c.len(), |k| k + 2), None))
        }
        ch if ch.is_ascii() && !ch.is_ascii_alphanumeric() => Ok((j, Some(ch))),
        _ => bad(),
    }
}

/// A character class starting at `c[i] == '['`: the index after its closing `]`.
fn re2_class(c: &[char], i: usize) -> Result<usize, String> {
    const POSIX: [&str; 14] = [
        "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
        "space", "upper", "word", "xdigit",
    ];
    let mut j = i + 1;
    if c.get(j) == Some(&'^') {
        j += 1;
    }
    let mut first = true;
    loop {
        match c.get(j) {
            None => return Err("missing closing ]".into()),
            Some(']') if !first => return Ok(j + 1),
            _ => {}
        }
        first = false;
        // POSIX class [:name:] / [:^name:].
        if c.get(j) == Some(&'[') && c.get(j + 1) == Some(&':') {
            let close =
                (j + 2..c.len().saturating_sub(1)).find(|&k| c[k] == ':' && c[k + 1] == ']');
            if let Some(close) = close {
                let name: String = c[j + 2..close].iter().collect();
                if !POSIX.contains(&name.trim_start_matches('^')) {
                    return Err(format!("invalid character class range [:{name}:]"));
                }
                j = close + 2;
                continue;
            }
        }
        // Single character or range lo-hi.
        let (next, lo) = class_char(c, j)?;
        j = next;
        if c.get(j) == Some(&'-') && c.get(j + 1).is_some_and(|&ch| ch != ']') {
            let (next, hi) = class_char(c, j + 1)?;
            if let (Some(lo), Some(hi)) = (lo, hi)
                && hi < lo
            {
                return Err(format!("invalid character class range {lo}-{hi}"));
            }
            j = next;
        }
    }
}

fn class_char(c: &[char], j: usize) -> Result<(usize, Option<char>), String> {
    match c.get(j) {
        None => Err("missing closing ]".into()),
        Some('\\') => re2_escape(c, j, true),
        Some(&ch) => Ok((j + 1, Some(ch))),
    }
}
