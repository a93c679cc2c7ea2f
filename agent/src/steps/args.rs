//! A step's arguments: what each one may hold ([`ArgKind`]) and the pure check that turns
//! the JSON of `Command::RunStep` into [`Args`] or says which argument is wrong. A step's
//! code runs only with checked arguments.

use serde_json::{Map, Value};

/// Most devices one `devices` argument may name (the controller's service check allows as
/// many).
pub const DEVICES_MAX: usize = 64;
/// Longest device path.
pub const DEVICE_PATH_MAX: usize = 128;

/// What an argument holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A list of 1 to [`DEVICES_MAX`] distinct `/dev/...` paths.
    Devices,
    /// A whole number above zero.
    PositiveInt,
    /// A software RAID plan (`proto::SoftwareRaid` as JSON) that passes its `check`.
    SoftwareRaid,
}

/// One argument a step takes.
#[derive(Debug)]
pub struct ArgDef {
    pub name: &'static str,
    /// Shown to operators (`argsinfo`); at most `proto::protocol::STEP_TEXT_MAX` bytes.
    pub description: &'static str,
    pub required: bool,
    pub kind: ArgKind,
}

/// A checked argument.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Devices(Vec<String>),
    PositiveInt(u64),
    SoftwareRaid(Box<proto::SoftwareRaid>),
}

/// A step's checked arguments, by name; an argument left out is absent. (A list, not a map:
/// a step takes a handful, and every generic map instance weighs on the ramdisk.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args(Vec<(&'static str, ArgValue)>);

impl Args {
    fn get(&self, name: &str) -> Option<&ArgValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The device paths of a [`ArgKind::Devices`] argument, if given.
    pub fn devices(&self, name: &str) -> Option<&[String]> {
        match self.get(name) {
            Some(ArgValue::Devices(d)) => Some(d),
            _ => None,
        }
    }

    /// The plan of a [`ArgKind::SoftwareRaid`] argument, if given.
    pub fn software_raid(&self, name: &str) -> Option<&proto::SoftwareRaid> {
        match self.get(name) {
            Some(ArgValue::SoftwareRaid(r)) => Some(r),
            _ => None,
        }
    }

    /// The number of a [`ArgKind::PositiveInt`] argument, if given.
    pub fn positive_int(&self, name: &str) -> Option<u64> {
        match self.get(name) {
            Some(ArgValue::PositiveInt(n)) => Some(*n),
            _ => None,
        }
    }
}

/// PURE: checks `given` against the arguments a step takes: no unknown name, every
/// required one present, each of its kind. The error names the argument and what is
/// wrong with it.
pub fn check(defs: &[ArgDef], given: &Map<String, Value>) -> Result<Args, String> {
    if let Some(unknown) = given.keys().find(|k| !defs.iter().any(|d| d.name == *k)) {
        let takes: Vec<&str> = defs.iter().map(|d| d.name).collect();
        return Err(format!(
            "unknown argument `{}` ({})",
            shorten(unknown),
            if takes.is_empty() {
                "the step takes none".to_owned()
            } else {
                format!("it takes {}", takes.join(", "))
            }
        ));
    }
    let mut args = Args::default();
    for d in defs {
        let Some(v) = given.get(d.name) else {
            if d.required {
                return Err(format!("argument `{}` is required", d.name));
            }
            continue;
        };
        let value = match d.kind {
            ArgKind::Devices => ArgValue::Devices(devices(v).map_err(|why| {
                format!(
                    "argument `{}` must be a list of 1 to {DEVICES_MAX} /dev/... paths: {why}",
                    d.name
                )
            })?),
            ArgKind::PositiveInt => ArgValue::PositiveInt(positive_int(v).ok_or_else(|| {
                format!(
                    "argument `{}` must be a whole number above 0, not {}",
                    d.name,
                    shown(v)
                )
            })?),
            ArgKind::SoftwareRaid => {
                ArgValue::SoftwareRaid(Box::new(software_raid(v).map_err(|why| {
                    format!(
                        "argument `{}` must be a software RAID plan ({{\"volumes\": [...], \
                         \"disks\": [...]}}): {why}",
                        d.name
                    )
                })?))
            }
        };
        args.0.push((d.name, value));
    }
    Ok(args)
}

fn devices(v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err(format!("got {}", shown(v)));
    };
    if items.is_empty() {
        return Err("the list is empty (leave the argument out for the default)".to_owned());
    }
    if items.len() > DEVICES_MAX {
        return Err(format!("{} entries", items.len()));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(p) = item else {
            return Err(format!("{} is not a path", shown(item)));
        };
        let name = p.strip_prefix("/dev/").unwrap_or_default();
        if name.is_empty()
            || p.len() > DEVICE_PATH_MAX
            || p.split('/').any(|c| c == "..")
            || p.contains('\0')
        {
            return Err(format!("{:?} is not a /dev/... path", shorten(p)));
        }
        if out.contains(p) {
            return Err(format!("{p} is named twice"));
        }
        out.push(p.clone());
    }
    Ok(out)
}

fn software_raid(v: &Value) -> Result<proto::SoftwareRaid, String> {
    if !v.is_object() {
        return Err(format!("got {}", shown(v)));
    }
    // serde's message names the field and what it expected; bounded, as it may quote a
    // value.
    let plan: proto::SoftwareRaid = serde_json::from_value(v.clone())
        .map_err(|e| e.to_string().chars().take(200).collect::<String>())?;
    plan.check()?;
    Ok(plan)
}

fn positive_int(v: &Value) -> Option<u64> {
    v.as_u64().filter(|n| *n > 0)
}

/// A JSON value in a message: short values as they are, others by their type.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string {:?}", shorten(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// At most 64 characters of operator text in a message.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFS: &[ArgDef] = &[
        ArgDef {
            name: "devices",
            description: "disks",
            required: false,
            kind: ArgKind::Devices,
        },
        ArgDef {
            name: "max_bytes",
            description: "bound",
            required: false,
            kind: ArgKind::PositiveInt,
        },
    ];

    fn given(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn good_arguments_are_kept_typed() {
        let a = check(
            DEFS,
            &given(json!({"devices": ["/dev/sda", "/dev/disk/by-path/pci-0000:00:04.0"], "max_bytes": 1048576})),
        )
        .expect("good");
        assert_eq!(
            a.devices("devices"),
            Some(
                &[
                    "/dev/sda".to_owned(),
                    "/dev/disk/by-path/pci-0000:00:04.0".to_owned()
                ][..]
            )
        );
        assert_eq!(a.positive_int("max_bytes"), Some(1 << 20));
        let none = check(DEFS, &Map::new()).expect("all optional");
        assert_eq!(none.devices("devices"), None);
        assert_eq!(none.positive_int("max_bytes"), None);
    }

    #[test]
    fn bad_arguments_are_refused_naming_the_argument() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"devices": "/dev/sda"}),
                "argument `devices` must be a list of 1 to 64 /dev/... paths: got the string \"/dev/sda\"",
            ),
            (
                json!({"devices": []}),
                "argument `devices` must be a list of 1 to 64 /dev/... paths: the list is empty",
            ),
            (
                json!({"devices": ["sda"]}),
                "argument `devices` must be a list of 1 to 64 /dev/... paths: \"sda\" is not a /dev/... path",
            ),
            (
                json!({"devices": ["/dev/"]}),
                "\"/dev/\" is not a /dev/... path",
            ),
            (
                json!({"devices": ["/dev/../etc/passwd"]}),
                "\"/dev/../etc/passwd\" is not a /dev/... path",
            ),
            (json!({"devices": [7]}), "7 is not a path"),
            (
                json!({"devices": ["/dev/sda", "/dev/sda"]}),
                "/dev/sda is named twice",
            ),
            (
                json!({"devices": vec!["/dev/x"; 65]}),
                "/dev/... paths: 65 entries",
            ),
            (
                json!({"max_bytes": 0}),
                "argument `max_bytes` must be a whole number above 0, not 0",
            ),
            (
                json!({"max_bytes": -4096}),
                "argument `max_bytes` must be a whole number above 0, not -4096",
            ),
            (
                json!({"max_bytes": 1.5}),
                "argument `max_bytes` must be a whole number above 0, not 1.5",
            ),
            (
                json!({"max_bytes": "1048576"}),
                "argument `max_bytes` must be a whole number above 0, not the string \"1048576\"",
            ),
            (
                json!({"max_bytes": null}),
                "argument `max_bytes` must be a whole number above 0, not null",
            ),
            (
                json!({"max_byte": 1}),
                "unknown argument `max_byte` (it takes devices, max_bytes)",
            ),
        ];
        for (v, want) in cases {
            let err = check(DEFS, &given(v.clone())).expect_err("refused");
            assert!(err.contains(want), "{v}: {err}");
        }
        let err = check(&[], &given(json!({"devices": ["/dev/sda"]}))).expect_err("none taken");
        assert_eq!(err, "unknown argument `devices` (the step takes none)");
        let long = "x".repeat(500);
        let err = check(DEFS, &given(json!({ long.clone(): 1 }))).expect_err("long name");
        assert!(err.len() < 200, "operator text is shortened: {err}");
    }

    #[test]
    fn required_arguments_must_be_given() {
        let defs = [ArgDef {
            name: "devices",
            description: "disks",
            required: true,
            kind: ArgKind::Devices,
        }];
        assert_eq!(
            check(&defs, &Map::new()).expect_err("missing"),
            "argument `devices` is required"
        );
    }
}
