//! The reference's CLI output formats, for the server to send as
//! [`Command`]s.
//!
//! A datamodel generates, per object, a list of [`Field`]s (name, rendered
//! value, [`Access`]). [`list_table`] applies `params=` / `params=all` and the
//! class defaults, [`param_list`] shows a whole record, and a [`Printer`]
//! turns [`PrintVal`]s into the commands the reference sends: each record is
//! one `Print` of its lines plus a blank line (so the client, which appends a
//! newline, shows two blank lines after each record), and with `--minimal`
//! the first value of each record, comma-joined, sent once at
//! [`Printer::flush`].

use crate::protocol::Command;

/// How a field can be used from the CLI; decides its key suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Plain read-only: ` ( RO)`.
    Ro,
    /// Plain settable with `param-set`: ` ( RW)`.
    Rw,
    /// Read-only set: ` (SRO)`.
    SetRo,
    /// Set with `param-add`/`param-remove`: ` (SRW)`.
    SetRw,
    /// Read-only map: ` (MRO)`.
    MapRo,
    /// Map with `param-set name:key=`/`param-add`/`param-remove`: ` (MRW)`.
    MapRw,
}

impl Access {
    /// The key suffix, with its leading space.
    pub fn suffix(self) -> &'static str {
        match self {
            Access::Ro => " ( RO)",
            Access::Rw => " ( RW)",
            Access::SetRo => " (SRO)",
            Access::SetRw => " (SRW)",
            Access::MapRo => " (MRO)",
            Access::MapRw => " (MRW)",
        }
    }

    /// Whether the field is a set.
    pub fn is_set(self) -> bool {
        matches!(self, Access::SetRo | Access::SetRw)
    }

    /// Whether the field is a map.
    pub fn is_map(self) -> bool {
        matches!(self, Access::MapRo | Access::MapRw)
    }
}

/// One row of a record as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// CLI name (`name-label`, `other-config`, ...).
    pub name: String,
    /// The rendered value (see [`format_set`], [`format_map`]).
    pub value: String,
    /// Access, hence the suffix.
    pub access: Access,
    /// Adds ` [DEPRECATED]` to the key.
    pub deprecated: bool,
    /// Never shown by `*-list` / `*-param-list`; `param-get` still reads it.
    pub hidden: bool,
    /// Costs an extra call: `*-list` shows `<expensive field>` instead.
    pub expensive: bool,
    /// For map fields, the pairs (for `param-get param-key=` and filters).
    pub map: Option<Vec<(String, String)>>,
    /// For set fields, the members (for filters).
    pub set: Option<Vec<String>>,
}

impl Field {
    /// A field with an already rendered value.
    pub fn new(name: impl Into<String>, value: impl Into<String>, access: Access) -> Self {
        Field {
            name: name.into(),
            value: value.into(),
            access,
            deprecated: false,
            hidden: false,
            expensive: false,
            map: None,
            set: None,
        }
    }

    /// A read-only plain field.
    pub fn ro(name: impl Into<String>, value: impl Into<String>) -> Self {
        Field::new(name, value, Access::Ro)
    }

    /// A settable plain field.
    pub fn rw(name: impl Into<String>, value: impl Into<String>) -> Self {
        Field::new(name, value, Access::Rw)
    }

    /// A set field, shown as `a; b; c`.
    pub fn set<I, S>(name: impl Into<String>, items: I, writable: bool) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let items: Vec<String> = items.into_iter().map(Into::into).collect();
        let access = if writable {
            Access::SetRw
        } else {
            Access::SetRo
        };
        let mut f = Field::new(name, format_set(&items), access);
        f.set = Some(items);
        f
    }

    /// A map field, shown as `k1: v1; k2: v2`.
    pub fn map<I, K, V>(name: impl Into<String>, pairs: I, writable: bool) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let access = if writable {
            Access::MapRw
        } else {
            Access::MapRo
        };
        let mut f = Field::new(name, format_map(&pairs), access);
        f.map = Some(pairs);
        f
    }

    /// Marks the field deprecated.
    pub fn deprecated(mut self) -> Self {
        self.deprecated = true;
        self
    }

    /// Marks the field hidden.
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// Marks the field expensive.
    pub fn expensive(mut self) -> Self {
        self.expensive = true;
        self
    }

    /// The decorated key: `name ( RO)`, `name (MRW) [DEPRECATED]`, ...
    pub fn key(&self) -> String {
        let mut k = format!("{}{}", self.name, self.access.suffix());
        if self.deprecated {
            k.push_str(" [DEPRECATED]");
        }
        k
    }

    /// `(decorated key, value)`, the reference's `print_field`.
    pub fn printed(&self) -> (String, String) {
        (self.key(), self.value.clone())
    }
}

/// Set members joined with `; `.
pub fn format_set<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Map pairs as `k: v` joined with `; `.
pub fn format_map<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}: {}", k.as_ref(), v.as_ref()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A record's text: `maxlen = 4 + longest key`; the first key padded on the
/// right to maxlen, the others on the left; `key: value` lines, each ending
/// with a newline.
pub fn multi_line_record(r: &[(String, String)]) -> String {
    let maxlen = 4 + r.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (i, (k, v)) in r.iter().enumerate() {
        if i == 0 {
            out.push_str(&format!("{k:<maxlen$}"));
        } else {
            out.push_str(&format!("{k:>maxlen$}"));
        }
        out.push_str(": ");
        out.push_str(v);
        out.push('\n');
    }
    if r.is_empty() {
        out.push('\n');
    }
    out
}

/// `--minimal` escaping: `,` becomes `\,` and `\` becomes `\\`.
pub fn escape_commas(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ',' => out.push_str("\\,"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// What a command asks to print (the reference's `printval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrintVal {
    /// A message line (dropped in `--minimal` mode).
    Msg(String),
    /// Records of `(decorated key, value)`.
    Table(Vec<Vec<(String, String)>>),
    /// Bare values, one per line (`param-get`, created uuids).
    List(Vec<String>),
    /// A line on stderr (dropped in `--minimal` mode).
    Stderr(String),
}

/// Turns [`PrintVal`]s into commands, normal or `--minimal`.
#[derive(Debug, Clone, Default)]
pub struct Printer {
    minimal: bool,
    buffer: Vec<String>,
}

impl Printer {
    /// A printer; `minimal` from the command line's `minimal` parameter.
    pub fn new(minimal: bool) -> Self {
        Printer {
            minimal,
            buffer: Vec::new(),
        }
    }

    /// Commands to send now for `v`.
    pub fn print(&mut self, v: PrintVal) -> Vec<Command> {
        if self.minimal {
            match v {
                PrintVal::Table(rs) => {
                    if !rs.is_empty() && rs.iter().all(|r| !r.is_empty()) {
                        let names: Vec<String> =
                            rs.iter().map(|r| escape_commas(&r[0].1)).collect();
                        self.buffer.push(names.join(","));
                    }
                }
                PrintVal::List(ss) => {
                    let ss: Vec<String> = ss.iter().map(|s| escape_commas(s)).collect();
                    self.buffer.push(ss.join(","));
                }
                PrintVal::Msg(_) | PrintVal::Stderr(_) => {}
            }
            Vec::new()
        } else {
            match v {
                PrintVal::Table(rs) => rs
                    .iter()
                    .map(|r| Command::Print(multi_line_record(r) + "\n"))
                    .collect(),
                PrintVal::List(ss) => ss.into_iter().map(Command::Print).collect(),
                PrintVal::Msg(s) => vec![Command::Print(s)],
                PrintVal::Stderr(s) => vec![Command::PrintStderr(s + "\n")],
            }
        }
    }

    /// Commands to send once the command has finished (before `Exit 0`):
    /// in `--minimal` mode one `Print` of everything buffered (so an empty
    /// list still prints an empty line), otherwise nothing.
    pub fn flush(&mut self) -> Vec<Command> {
        if self.minimal {
            // The reference prepends to its buffer, so later prints come first.
            let mut b = std::mem::take(&mut self.buffer);
            b.reverse();
            vec![Command::Print(b.join(","))]
        } else {
            Vec::new()
        }
    }
}

/// The columns `params=` asks for: `None` when absent (use `defaults`), an
/// empty list for `params=all` (every field).
pub fn choose_params(params: Option<&str>, defaults: &[&str]) -> Vec<String> {
    match params {
        Some("all") => Vec::new(),
        Some(ps) => ps.split(',').map(str::to_string).collect(),
        None => defaults.iter().map(|s| s.to_string()).collect(),
    }
}

/// The fields of `record` to show for `selected` (empty: all), in the
/// record's order, without hidden fields.
pub fn select_fields<'a>(record: &'a [Field], selected: &[String]) -> Vec<&'a Field> {
    record
        .iter()
        .filter(|f| selected.is_empty() || selected.contains(&f.name))
        .filter(|f| !f.hidden)
        .collect()
}

/// The table of a `<class>-list`: `records` already filtered, `params` the
/// value of `params=` if given, `defaults` the class's default columns.
/// Expensive fields show `<expensive field>`.
pub fn list_table(
    records: &[Vec<Field>],
    params: Option<&str>,
    defaults: &[&str],
) -> Vec<Vec<(String, String)>> {
    let selected = choose_params(params, defaults);
    records
        .iter()
        .map(|r| {
            select_fields(r, &selected)
                .into_iter()
                .map(|f| {
                    if f.expensive {
                        (f.key(), "<expensive field>".to_string())
                    } else {
                        f.printed()
                    }
                })
                .collect()
        })
        .collect()
}

/// The table of a `<class>-param-list`: every non-hidden field.
pub fn param_list(record: &[Field]) -> Vec<Vec<(String, String)>> {
    vec![record
        .iter()
        .filter(|f| !f.hidden)
        .map(Field::printed)
        .collect()]
}

/// What `<class>-param-get param-name=N [param-key=K]` prints, or the
/// reference's error text: a missing field is `Err(None)` (the server
/// reports the missing parameter), a missing map key
/// `Err(Some("Key K not found in map"))`.
pub fn param_get(
    record: &[Field],
    name: &str,
    key: Option<&str>,
) -> Result<String, Option<String>> {
    let f = record.iter().find(|f| f.name == name).ok_or(None)?;
    match (key, &f.map) {
        (Some(k), Some(m)) => m
            .iter()
            .find(|(mk, _)| mk == k)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Some(format!("Key {k} not found in map"))),
        _ => Ok(f.value.clone()),
    }
}

/// Does a record match one `<class>-list` filter `k=v`? A plain field
/// compares its rendered value; `map:key=v` a map entry; `set:x=v` (or
/// `set:contains=v`) set membership. An unknown field matches nothing.
pub fn matches_filter(record: &[Field], k: &str, v: &str) -> bool {
    if let Some(f) = record.iter().find(|f| f.name == k) {
        return f.value == v;
    }
    if let Some((name, sub)) = k.split_once(':') {
        if let Some(f) = record.iter().find(|f| f.name == name) {
            if let Some(m) = &f.map {
                return m.iter().any(|(mk, mv)| mk == sub && mv == v);
            }
            if let Some(s) = &f.set {
                return s.iter().any(|x| x == v);
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Errors, as the reference's exception handler reports them (each list is
// followed by `Exit 1`, which the caller sends).

/// `param_error`: `S: T` (or just `T`) then `For usage run: 'xe help'`.
pub fn param_error(s: &str, t: &str) -> Vec<Command> {
    let first = if s.is_empty() {
        format!("{t}\n")
    } else {
        format!("{s}: {t}\n")
    };
    vec![
        Command::PrintStderr(first),
        Command::PrintStderr("For usage run: 'xe help'\n".into()),
    ]
}

/// A syntax error (the reference's detail is always empty).
pub fn syntax_error(detail: &str) -> Vec<Command> {
    param_error("Syntax error", detail)
}

/// An unknown command.
pub fn unknown_command(name: &str) -> Vec<Command> {
    param_error("Unknown command", name)
}

/// A missing required parameter.
pub fn param_not_found(name: &str) -> Vec<Command> {
    param_error("Required parameter not found", name)
}

/// Authentication failed (`uname` empty: none was given).
pub fn authentication_failed(uname: &str) -> Vec<Command> {
    if uname.is_empty() {
        param_error("", "Username/password must be specified")
    } else {
        param_error("", "Authentication failed")
    }
}

/// `Error: MSG` on stderr (CLI failures, record failures).
pub fn other_error(msg: &str) -> Vec<Command> {
    vec![Command::PrintStderr(format!("Error: {msg}\n"))]
}

/// An API error. With a description known to the server (`described`:
/// the description and its `name: value` lines) it is printed on stderr;
/// otherwise it is sent as an `Error` command, which the client prints as
/// `Error code: CODE` / `Error parameters: a, b`.
pub fn server_error(
    code: &str,
    params: &[String],
    described: Option<(String, Vec<String>)>,
) -> Vec<Command> {
    match described {
        None => vec![Command::Error {
            code: code.to_string(),
            params: params.to_vec(),
        }],
        Some((desc, lines)) => std::iter::once(desc)
            .chain(lines)
            .map(|l| Command::PrintStderr(l + "\n"))
            .collect(),
    }
}

/// What the reference client writes for a command, for tests and tools:
/// `(stdout, stderr, exit)`; `Print` gets a newline, `PrintStderr` none,
/// `Error` two lines.
pub fn client_view(cmds: &[Command]) -> (String, String, Option<i32>) {
    let (mut out, mut err, mut exit) = (String::new(), String::new(), None);
    for c in cmds {
        match c {
            Command::Print(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Command::PrintStderr(s) => err.push_str(s),
            Command::Error { code, params } => {
                err.push_str(&format!(
                    "Error code: {code}\nError parameters: {}\n",
                    params.join(", ")
                ));
            }
            Command::Exit(n) => exit = Some(*n),
            _ => {}
        }
    }
    (out, err, exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_cpu(uuid: &str, number: u32) -> Vec<Field> {
        vec![
            Field::ro("uuid", uuid),
            Field::ro("host-uuid", "0a5e6c7e-7a8d-4d7c-a9d5-1f0e2b3c4d5e"),
            Field::ro("number", number.to_string()),
            Field::ro("vendor", "GenuineIntel"),
            Field::ro("speed", "2660"),
            Field::ro("model", "23"),
            Field::ro("family", "6"),
            Field::ro("modelname", "Intel(R) Core(TM)2 Quad CPU @ 2.66GHz"),
            Field::ro("stepping", "7"),
            Field::ro("flags", "fpu de tsc msr pae mce cx8 apic sep"),
            Field::ro("utilisation", "0.012").expensive(),
        ]
    }

    fn render(cmds: Vec<Command>, flush: Vec<Command>) -> String {
        let mut all = cmds;
        all.extend(flush);
        client_view(&all).0
    }

    /// `xe host-cpu-list params=uuid,number,vendor,modelname,stepping,flags`
    /// (the XenServer documentation's example): the fields come in the
    /// record's order, `maxlen = 4 + len("modelname ( RO)") = 19`, and each
    /// record is followed by two blank lines on the client.
    #[test]
    fn golden_host_cpu_list_params() {
        let records = vec![
            host_cpu("b37e8b4a-5c8e-4c8b-9f6a-1e2d3c4b5a69", 0),
            host_cpu("cb9d3a6c-2c5e-4f1a-8c4b-7e6d5c4b3a21", 1),
        ];
        let t = list_table(
            &records,
            Some("uuid,number,vendor,modelname,stepping,flags"),
            &["uuid", "number", "vendor", "speed", "utilisation"],
        );
        let mut p = Printer::new(false);
        let out = render(p.print(PrintVal::Table(t)), p.flush());
        let expected = "\
uuid ( RO)         : b37e8b4a-5c8e-4c8b-9f6a-1e2d3c4b5a69
       number ( RO): 0
       vendor ( RO): GenuineIntel
    modelname ( RO): Intel(R) Core(TM)2 Quad CPU @ 2.66GHz
     stepping ( RO): 7
        flags ( RO): fpu de tsc msr pae mce cx8 apic sep


uuid ( RO)         : cb9d3a6c-2c5e-4f1a-8c4b-7e6d5c4b3a21
       number ( RO): 1
       vendor ( RO): GenuineIntel
    modelname ( RO): Intel(R) Core(TM)2 Quad CPU @ 2.66GHz
     stepping ( RO): 7
        flags ( RO): fpu de tsc msr pae mce cx8 apic sep


";
        assert_eq!(out, expected);
    }

    /// The default `vm-list` shape quoted in xe-cli.md.
    #[test]
    fn golden_vm_list_alignment() {
        let r = vec![vec![
            Field::ro("uuid", "7a3c..."),
            Field::rw("name-label", "vm1"),
            Field::ro("power-state", "running"),
        ]];
        let t = list_table(&r, None, &["uuid", "name-label", "power-state"]);
        let text = multi_line_record(&t[0]);
        assert_eq!(
            text,
            "uuid ( RO)           : 7a3c...\n     name-label ( RW): vm1\n    power-state ( RO): running\n"
        );
        let mut p = Printer::new(false);
        assert_eq!(
            p.print(PrintVal::Table(t)),
            vec![Command::Print(text + "\n")]
        );
    }

    #[test]
    fn default_columns_expensive_and_all() {
        let records = vec![host_cpu("u0", 0)];
        let t = list_table(
            &records,
            None,
            &["uuid", "number", "vendor", "speed", "utilisation"],
        );
        assert_eq!(
            t[0],
            vec![
                ("uuid ( RO)".to_string(), "u0".to_string()),
                ("number ( RO)".into(), "0".into()),
                ("vendor ( RO)".into(), "GenuineIntel".into()),
                ("speed ( RO)".into(), "2660".into()),
                ("utilisation ( RO)".into(), "<expensive field>".into()),
            ]
        );
        let all = list_table(&records, Some("all"), &["uuid"]);
        assert_eq!(all[0].len(), 11);
        let pl = param_list(&records[0]);
        assert_eq!(pl[0][10].1, "0.012");
    }

    #[test]
    fn suffixes_sets_maps() {
        let f = Field::map("other-config", [("a", "1"), ("b", "2")], true);
        assert_eq!(
            f.printed(),
            ("other-config (MRW)".into(), "a: 1; b: 2".into())
        );
        let f = Field::map("cpu_info", Vec::<(String, String)>::new(), false);
        assert_eq!(f.printed(), ("cpu_info (MRO)".into(), "".into()));
        let f = Field::set("tags", ["x", "y", "z"], true);
        assert_eq!(f.printed(), ("tags (SRW)".into(), "x; y; z".into()));
        let f = Field::set("allowed-operations", ["start"], false);
        assert_eq!(f.key(), "allowed-operations (SRO)");
        assert_eq!(
            Field::rw("name", "n").deprecated().key(),
            "name ( RW) [DEPRECATED]"
        );
        let hidden = vec![Field::ro("uuid", "u"), Field::ro("secret", "s").hidden()];
        assert_eq!(
            list_table(std::slice::from_ref(&hidden), Some("uuid,secret"), &[])[0].len(),
            1
        );
        assert_eq!(param_list(&hidden)[0].len(), 1);
        assert_eq!(param_get(&hidden, "secret", None), Ok("s".into()));
    }

    #[test]
    fn minimal() {
        let records = vec![host_cpu("u,0", 0), host_cpu("u\\1", 1)];
        let mut p = Printer::new(true);
        let t = list_table(&records, None, &["uuid", "number"]);
        assert!(p.print(PrintVal::Table(t)).is_empty());
        assert!(p.print(PrintVal::Msg("dropped".into())).is_empty());
        assert_eq!(p.flush(), vec![Command::Print("u\\,0,u\\\\1".into())]);

        // Empty list: an empty line.
        let mut p = Printer::new(true);
        p.print(PrintVal::Table(vec![]));
        assert_eq!(render(vec![], p.flush()), "\n");

        // params= picks the field shown.
        let mut p = Printer::new(true);
        let t = list_table(&records, Some("vendor"), &["uuid"]);
        p.print(PrintVal::Table(t));
        assert_eq!(
            p.flush(),
            vec![Command::Print("GenuineIntel,GenuineIntel".into())]
        );

        // Later prints come first, as in the reference.
        let mut p = Printer::new(true);
        p.print(PrintVal::List(vec!["a".into()]));
        p.print(PrintVal::List(vec!["b".into(), "c".into()]));
        assert_eq!(p.flush(), vec![Command::Print("b,c,a".into())]);
    }

    #[test]
    fn lists_messages_and_get() {
        let mut p = Printer::new(false);
        let cmds = p.print(PrintVal::List(vec!["a".into(), "b".into()]));
        assert_eq!(
            cmds,
            vec![Command::Print("a".into()), Command::Print("b".into())]
        );
        assert_eq!(
            p.print(PrintVal::Stderr("warn".into())),
            vec![Command::PrintStderr("warn\n".into())]
        );
        let r = vec![
            Field::ro("uuid", "u"),
            Field::map("cpu_info", [("cpu_count", "4"), ("vendor", "AMD")], false),
        ];
        assert_eq!(param_get(&r, "cpu_info", Some("vendor")), Ok("AMD".into()));
        assert_eq!(
            param_get(&r, "cpu_info", Some("nope")),
            Err(Some("Key nope not found in map".into()))
        );
        assert_eq!(param_get(&r, "uuid", Some("x")), Ok("u".into()));
        assert_eq!(param_get(&r, "nope", None), Err(None));
        assert_eq!(
            param_get(&r, "cpu_info", None),
            Ok("cpu_count: 4; vendor: AMD".into())
        );
    }

    #[test]
    fn filters() {
        let r = vec![
            Field::ro("power-state", "running"),
            Field::map("other-config", [("k", "v")], true),
            Field::set("tags", ["a", "b"], true),
        ];
        assert!(matches_filter(&r, "power-state", "running"));
        assert!(!matches_filter(&r, "power-state", "halted"));
        assert!(matches_filter(&r, "other-config:k", "v"));
        assert!(!matches_filter(&r, "other-config:k", "w"));
        assert!(matches_filter(&r, "tags:contains", "b"));
        assert!(!matches_filter(&r, "nope", ""));
    }

    #[test]
    fn errors() {
        let (_, err, _) = client_view(&syntax_error(""));
        assert_eq!(err, "Syntax error: \nFor usage run: 'xe help'\n");
        let (_, err, _) = client_view(&authentication_failed("root"));
        assert_eq!(err, "Authentication failed\nFor usage run: 'xe help'\n");
        let (_, err, _) = client_view(&server_error("SOME_CODE", &["a".into(), "b".into()], None));
        assert_eq!(err, "Error code: SOME_CODE\nError parameters: a, b\n");
        let (_, err, _) = client_view(&server_error(
            "UUID_INVALID",
            &[],
            Some((
                "The uuid you supplied was invalid.".into(),
                vec!["type: VM".into(), "uuid: x".into()],
            )),
        ));
        assert_eq!(
            err,
            "The uuid you supplied was invalid.\ntype: VM\nuuid: x\n"
        );
        assert_eq!(client_view(&other_error("boom")).1, "Error: boom\n");
    }
}
