//! Query-string parsing the way Ironic's clients send it: values may be unencoded
//! (`address=52:54:00:00:00:01`) or percent-encoded (`fields=a%2Cb`), booleans are
//! Python-style (`True`/`False`), plus the shared paging parameters (`limit`, `marker`,
//! `sort_key`, `sort_dir`, `fields`) and the `next` link they produce.

use uuid::Uuid;

use super::error::ApiError;
use crate::store::SortDir;

/// Decoded query parameters in request order.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        Self { pairs }
    }

    /// The first value of `name` (empty values count as absent, as webob does for filters).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// A strict Python-style boolean (`oslo.utils.strutils.bool_from_string(strict=True)`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name).map(|v| parse_bool(name, v)).transpose()
    }

    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, ApiError> {
        self.get(name)
            .map(|v| super::schema::expect_uuid(name, v))
            .transpose()
    }

    /// `limit`, validated and capped by `max_limit`; no `limit` means `max_limit`.
    pub fn limit(&self, max_limit: u32) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(max_limit),
            Some(raw) => {
                let n: i64 = raw.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("Expected an integer for limit: {raw}"))
                })?;
                if n <= 0 {
                    return Err(ApiError::bad_request("Limit must be positive"));
                }
                Ok(u32::try_from(n).unwrap_or(u32::MAX).min(max_limit))
            }
        }
    }

    pub fn sort_dir(&self) -> Result<SortDir, ApiError> {
        match self.get("sort_dir") {
            None => Ok(SortDir::Asc),
            Some(v) if v.eq_ignore_ascii_case("asc") => Ok(SortDir::Asc),
            Some(v) if v.eq_ignore_ascii_case("desc") => Ok(SortDir::Desc),
            Some(v) => Err(ApiError::bad_request(format!(
                "Invalid sort direction: {v}. Acceptable values are 'asc' or 'desc'"
            ))),
        }
    }

    /// `sort_key`, which must be one of `allowed` (default `id`).
    pub fn sort_key(&self, allowed: &[&str]) -> Result<String, ApiError> {
        match self.get("sort_key") {
            None => Ok("id".to_owned()),
            Some(k) if k == "id" || allowed.contains(&k) => Ok(k.to_owned()),
            Some(k) => Err(ApiError::bad_request(format!(
                "The sort_key value \"{k}\" is an invalid field for sorting"
            ))),
        }
    }

    /// `fields=a,b`, each checked against `valid` (API >= 1.8). Unknown names are a 400 (Ironic
    /// answers 500 here, which the contract says not to copy).
    pub fn fields(&self, valid: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
        let Some(raw) = self.get("fields") else {
            return Ok(None);
        };
        let fields: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        let bad: Vec<&str> = fields
            .iter()
            .map(String::as_str)
            .filter(|f| !valid.contains(f))
            .collect();
        if !bad.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Field(s) \"{}\" are not valid",
                bad.join(", ")
            )));
        }
        Ok(Some(fields))
    }
}

/// The values `strutils.bool_from_string` accepts, sorted as its error message lists them.
const BOOL_VALUES: &str = "'0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'";

pub fn parse_bool(name: &str, raw: &str) -> Result<bool, ApiError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "Invalid {name}: Unrecognized value '{raw}', acceptable values are: {BOOL_VALUES}"
        ))),
    }
}

/// Percent-decoding with `+` as a space (HTML form rules, as webob parses queries).
/// Invalid escapes are kept literally.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Pages a list sorted in memory (the short collections: conductors, inspection rules):
/// drops everything up to the row whose `key` is `marker` (`None`: an unknown marker), keeps
/// `limit` rows, and says whether more follow.
pub fn page_in_memory<T>(
    rows: &mut Vec<T>,
    marker: Option<&str>,
    key: impl Fn(&T) -> String,
    limit: u32,
) -> Option<bool> {
    if let Some(m) = marker {
        let at = rows.iter().position(|r| key(r) == m)?;
        rows.drain(..=at);
    }
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Some(more)
}

/// Builds Ironic's `next` link: `<base>/v1/<path>?<args>&limit=<n>&marker=<uuid>`.
/// `args` are (key, value) pairs already in the order Ironic emits them.
pub fn next_link(
    base: &str,
    path: &str,
    args: &[(&str, String)],
    limit: u32,
    marker: Uuid,
) -> String {
    let mut url = format!("{base}/v1/{path}?");
    for (k, v) in args {
        url.push_str(k);
        url.push('=');
        url.push_str(&encode(v));
        url.push('&');
    }
    url.push_str(&format!("limit={limit}&marker={marker}"));
    url
}

/// The `next` link arguments every list shares, in Ironic's order: sort key and direction,
/// the echoed filters, `detail` when it was a query parameter, and `fields`.
pub fn list_args<'a>(
    sort_key: String,
    sort_dir: SortDir,
    echo: Vec<(&'a str, String)>,
    detail: bool,
    fields: Option<&[String]>,
) -> Vec<(&'a str, String)> {
    let dir = if sort_dir == SortDir::Desc {
        "desc"
    } else {
        "asc"
    };
    let mut args = vec![("sort_key", sort_key), ("sort_dir", dir.to_owned())];
    args.extend(echo);
    if detail {
        args.push(("detail", "True".into()));
    }
    if let Some(f) = fields {
        args.push(("fields", f.join(",")));
    }
    args
}

/// Minimal query-value encoding: keeps what Ironic leaves readable (`,`, `:`), escapes the rest.
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unencoded_and_encoded_values() {
        let p = Params::parse(Some("address=52:54:00:00:00:01&fields=a%2Cb&x=a+b&empty="));
        assert_eq!(p.get("address"), Some("52:54:00:00:00:01"));
        assert_eq!(p.get("fields"), Some("a,b"));
        assert_eq!(p.get("x"), Some("a b"));
        assert_eq!(p.get("empty"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%41"), "A");
    }

    #[test]
    fn python_booleans() {
        assert_eq!(parse_bool("m", "True").ok(), Some(true));
        assert_eq!(parse_bool("m", "False").ok(), Some(false));
        let err = parse_bool("maintenance", "maybe").expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "Invalid maintenance: Unrecognized value 'maybe', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
        );
    }

    #[test]
    fn limits() {
        let lim = |q: &str| {
            Params::parse(Some(q))
                .limit(1000)
                .map_err(|e| e.to_string())
        };
        assert_eq!(lim(""), Ok(1000));
        assert_eq!(lim("limit=5"), Ok(5));
        assert_eq!(lim("limit=5000"), Ok(1000));
        assert_eq!(
            lim("limit=abc"),
            Err("Expected an integer for limit: abc".into())
        );
        assert_eq!(lim("limit=0"), Err("Limit must be positive".into()));
        assert_eq!(lim("limit=-3"), Err("Limit must be positive".into()));
    }

    #[test]
    fn next_link_shape() {
        let m = Uuid::nil();
        assert_eq!(
            next_link(
                "http://h:1",
                "nodes",
                &[("sort_key", "id".into()), ("fields", "uuid,name".into())],
                2,
                m
            ),
            format!("http://h:1/v1/nodes?sort_key=id&fields=uuid,name&limit=2&marker={m}")
        );
    }
}
