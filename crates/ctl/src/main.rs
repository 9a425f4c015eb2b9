//! `warrenctl`: rabbitmqctl's day-to-day commands (same names, arguments, output columns and
//! exit codes) for a Warren node, as a client of its HTTP management API.
//!
//! The local node is found through its data directory (`--data-dir`, `WARREN_DATA_DIR`, or the
//! server's default `./warren-data`): the server leaves `control.json` there, readable only by
//! its owner, with the API's address and a secret, so no password is needed on the node's host.
//! `-n host:port` (with `--username`/`--password`, or `http://user:pass@host:port`) reaches
//! another node with a user's credentials.

mod http;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;

use base64::Engine;
use serde_json::{json, Value};

use http::Target;

/// Exit codes as rabbitmqctl's (sysexits).
const EX_OK: u8 = 0;
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
const EX_TEMPFAIL: u8 = 75;
const EX_NOPERM: u8 = 77;

/// A failed command: exit code and message.
struct Failure(u8, String);

type CmdResult = Result<(), Failure>;

fn usage(msg: impl Into<String>) -> Failure {
    Failure(EX_USAGE, msg.into())
}

/// One command: name, argument synopsis, description.
struct Command {
    name: &'static str,
    args: &'static str,
    about: &'static str,
}

const COMMANDS: &[Command] = &[
    Command { name: "status", args: "", about: "Displays status of a node" },
    Command {
        name: "await_startup",
        args: "[--timeout <seconds>]",
        about: "Waits for the node to finish booting and accept connections",
    },
    Command {
        name: "cluster_status",
        args: "",
        about: "Displays all the nodes in the cluster (this node until clustering exists)",
    },
    Command { name: "stop", args: "", about: "Stops the node" },
    Command {
        name: "shutdown",
        args: "[--timeout <seconds>]",
        about: "Stops the node and waits for its OS process to exit (local node only)",
    },
    Command { name: "ping", args: "", about: "Checks that the node is up and answering" },
    Command {
        name: "stop_app",
        args: "",
        about: "Stops the broker application, leaving the process (and warrenctl's access) running",
    },
    Command { name: "start_app", args: "", about: "Starts the broker application" },
    Command {
        name: "reset",
        args: "",
        about: "Wipes every definition and message, back to a fresh node (requires stop_app)",
    },
    Command { name: "force_reset", args: "", about: "As reset (a single node has no cluster state to force past)" },
    Command {
        name: "set_vm_memory_high_watermark",
        args: "<fraction> | absolute <memory_limit>",
        about: "Sets the memory high watermark until the node restarts (a fraction of RAM, or bytes: 4G, 512MiB, ...)",
    },
    Command {
        name: "set_disk_free_limit",
        args: "<disk_limit> | mem_relative <fraction>",
        about: "Sets the free disk space limit until the node restarts (bytes: 2GB, 500MiB, ...; or relative to RAM)",
    },
    Command {
        name: "hash_password",
        args: "<password>",
        about: "Prints the password's hash as the internal database stores it (rabbit_password_hashing_sha256)",
    },
    Command { name: "add_user", args: "<username> <password>", about: "Creates a new user in the internal database" },
    Command { name: "delete_user", args: "<username>", about: "Removes a user from the internal database" },
    Command { name: "change_password", args: "<username> <password>", about: "Changes the user password" },
    Command { name: "list_users", args: "", about: "List user names and tags" },
    Command {
        name: "authenticate_user",
        args: "<username> <password>",
        about: "Attempts to authenticate a user. Exits with a non-zero code if authentication fails.",
    },
    Command {
        name: "clear_password",
        args: "<username>",
        about: "Clears (resets) password and disables password login for a user",
    },
    Command { name: "set_user_tags", args: "<username> <tag> [...]", about: "Sets user tags" },
    Command {
        name: "set_user_limits",
        args: "<username> <definition>",
        about: "Sets user limits (JSON: max-connections, max-channels; negative for none)",
    },
    Command { name: "clear_user_limits", args: "<username> <limit> | all", about: "Clears user limits" },
    Command { name: "list_user_limits", args: "[--user <username>]", about: "Displays configured user limits" },
    Command { name: "add_vhost", args: "<vhost>", about: "Creates a virtual host" },
    Command { name: "delete_vhost", args: "<vhost>", about: "Deletes a virtual host" },
    Command { name: "list_vhosts", args: "[<column> ...]", about: "Lists virtual hosts" },
    Command {
        name: "set_vhost_limits",
        args: "[-p <vhost>] <definition>",
        about: "Sets virtual host limits (JSON: max-connections, max-queues; negative for none)",
    },
    Command { name: "clear_vhost_limits", args: "[-p <vhost>]", about: "Clears virtual host limits" },
    Command {
        name: "list_vhost_limits",
        args: "[-p <vhost>] [--global]",
        about: "Displays configured virtual host limits",
    },
    Command {
        name: "set_permissions",
        args: "[-p <vhost>] <username> <conf> <write> <read>",
        about: "Sets user permissions for a vhost",
    },
    Command {
        name: "clear_permissions",
        args: "[-p <vhost>] <username>",
        about: "Revokes user permissions for a vhost",
    },
    Command { name: "list_permissions", args: "[-p <vhost>]", about: "Lists user permissions in a virtual host" },
    Command {
        name: "list_user_permissions",
        args: "<username>",
        about: "Lists permissions of a user across all virtual hosts",
    },
    Command {
        name: "set_topic_permissions",
        args: "[-p <vhost>] <username> <exchange> <write> <read>",
        about: "Sets topic permissions for an exchange",
    },
    Command {
        name: "clear_topic_permissions",
        args: "[-p <vhost>] <username> [<exchange>]",
        about: "Clears user topic permissions for a vhost or exchange",
    },
    Command {
        name: "list_topic_permissions",
        args: "[-p <vhost>]",
        about: "Lists topic permissions in a virtual host",
    },
    Command { name: "list_queues", args: "[-p <vhost>] [<column> ...]", about: "Lists queues and their properties" },
    Command { name: "list_exchanges", args: "[-p <vhost>] [<column> ...]", about: "Lists exchanges" },
    Command { name: "list_bindings", args: "[-p <vhost>] [<column> ...]", about: "Lists all bindings on a vhost" },
    Command { name: "list_connections", args: "[<column> ...]", about: "Lists AMQP 0.9.1 connections for the node" },
    Command { name: "list_channels", args: "[<column> ...]", about: "Lists all channels in the node" },
    Command { name: "list_consumers", args: "[-p <vhost>] [<column> ...]", about: "Lists all consumers for a vhost" },
    Command {
        name: "close_connection",
        args: "<connection name> <explanation>",
        about: "Instructs the broker to close the connection associated with the name",
    },
    Command {
        name: "close_all_connections",
        args: "[-p <vhost> --limit <limit>] [-n <node> --global] [--per-connection-delay <ms>] <explanation>",
        about: "Instructs the broker to close all connections for the specified vhost or entire RabbitMQ node",
    },
    Command { name: "purge_queue", args: "[-p <vhost>] <queue>", about: "Purges a queue (removes all messages in it)" },
    Command {
        name: "delete_queue",
        args: "[-p <vhost>] <queue> [--if-empty|-e] [--if-unused|-u]",
        about: "Deletes a queue",
    },
    Command {
        name: "set_policy",
        args: "[-p <vhost>] [--priority <priority>] [--apply-to <apply-to>] <name> <pattern> <definition>",
        about: "Sets or updates a policy",
    },
    Command { name: "clear_policy", args: "[-p <vhost>] <name>", about: "Clears a policy" },
    Command { name: "list_policies", args: "[-p <vhost>]", about: "Lists all policies in a virtual host" },
    Command {
        name: "set_operator_policy",
        args: "[-p <vhost>] [--priority <priority>] [--apply-to <apply-to>] <name> <pattern> <definition>",
        about: "Sets an operator policy that overrides a subset of arguments in user policies",
    },
    Command { name: "clear_operator_policy", args: "[-p <vhost>] <name>", about: "Clears an operator policy" },
    Command {
        name: "list_operator_policies",
        args: "[-p <vhost>]",
        about: "Lists operator policy overrides for a virtual host",
    },
    Command {
        name: "trace_on",
        args: "[-p <vhost>]",
        about: "Starts message tracing (the firehose, amq.rabbitmq.trace)",
    },
    Command { name: "trace_off", args: "[-p <vhost>]", about: "Stops message tracing" },
    Command {
        name: "check_running",
        args: "",
        about: "Health check: the broker application is booted and running (rabbitmq-diagnostics)",
    },
    Command {
        name: "check_local_alarms",
        args: "",
        about: "Health check: no resource alarm (memory, disk) is in effect on the node",
    },
    Command {
        name: "check_alarms",
        args: "",
        about: "Health check: no resource alarm is in effect in the cluster (this node)",
    },
    Command { name: "alarms", args: "", about: "Lists resource alarms in effect" },
    Command {
        name: "check_port_connectivity",
        args: "",
        about: "Health check: every listener of the node accepts TCP connections",
    },
    Command { name: "check_virtual_hosts", args: "", about: "Health check: every virtual host is running" },
    Command { name: "listeners", args: "", about: "Lists the node's listeners and their protocols" },
    Command { name: "server_version", args: "", about: "Prints the RabbitMQ version the node is compatible with" },
    Command { name: "set_cluster_name", args: "<name>", about: "Sets the cluster name" },
    Command {
        name: "set_global_parameter",
        args: "<name> <value>",
        about: "Sets a global runtime parameter (the value is JSON)",
    },
    Command { name: "clear_global_parameter", args: "<name>", about: "Clears a global runtime parameter" },
    Command { name: "list_global_parameters", args: "", about: "Lists global runtime parameters" },
    Command {
        name: "list_feature_flags",
        args: "",
        about: "Lists feature flags (none: Warren's features are always on, nothing to enable)",
    },
    Command {
        name: "enable_feature_flag",
        args: "all",
        about: "Enables all feature flags: succeeds, as there are none to enable",
    },
    Command { name: "export_definitions", args: "<file_path | \"-\">", about: "Exports definitions in JSON" },
    Command { name: "import_definitions", args: "<file_path | \"-\">", about: "Imports definitions in JSON" },
];

/// A byte count as rabbitmqctl takes it: an integer with an optional unit, where k, K, kiB, M,
/// MiB, G, GiB, T, TiB are powers of 1024 and kB, KB, MB, GB, TB powers of 1000.
fn parse_bytes(s: &str) -> Result<u64, Failure> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| usage(format!("not a byte count: {s}")))?;
    let mult: u64 = match unit {
        "" => 1,
        "k" | "K" | "kiB" | "KiB" => 1 << 10,
        "kB" | "KB" => 1_000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        "T" | "TiB" => 1 << 40,
        "TB" => 1_000_000_000_000,
        _ => return Err(usage(format!("unknown unit in {s}"))),
    };
    n.checked_mul(mult).ok_or_else(|| usage(format!("too large: {s}")))
}

/// base64(salt ‖ SHA-256(salt ‖ password)) with a random 4-byte salt: RabbitMQ's
/// rabbit_password_hashing_sha256, the form `add_user` stores and definitions carry.
fn hash_password(password: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut salt = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut salt);
    }
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// Parsed command line.
#[derive(Default, Clone)]
struct Args {
    command: Option<String>,
    positional: Vec<String>,
    vhost: Option<String>,
    node: Option<String>,
    quiet: bool,
    silent: bool,
    no_headers: bool,
    json: bool,
    help: bool,
    data_dir: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// Command-specific flags (`--if-empty`, `--priority 1`, ...).
    flags: BTreeMap<String, String>,
}

fn parse_args(argv: Vec<String>) -> Result<Args, Failure> {
    let mut a = Args::default();
    let mut it = argv.into_iter();
    let value = |it: &mut std::vec::IntoIter<String>, name: &str| -> Result<String, Failure> {
        it.next().ok_or_else(|| usage(format!("option {name} requires a value")))
    };
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let take = |it: &mut std::vec::IntoIter<String>| match inline.clone() {
            Some(v) => Ok(v),
            None => value(it, &name),
        };
        match name.as_str() {
            "-p" | "--vhost" => a.vhost = Some(take(&mut it)?),
            "-n" | "--node" => a.node = Some(take(&mut it)?),
            "-q" | "--quiet" => a.quiet = true,
            "-s" | "--silent" => {
                a.silent = true;
                a.quiet = true;
            }
            "--no-table-headers" => a.no_headers = true,
            "--formatter" => match take(&mut it)?.as_str() {
                "json" => a.json = true,
                "table" | "pretty_table" | "plain" => a.json = false,
                other => return Err(usage(format!("unknown formatter '{other}' (use json or table)"))),
            },
            "-h" | "--help" => a.help = true,
            "--data-dir" => a.data_dir = Some(take(&mut it)?),
            "--username" => a.username = Some(take(&mut it)?),
            "--password" => a.password = Some(take(&mut it)?),
            "-t" | "--timeout" => {
                let v = take(&mut it)?;
                a.flags.insert("timeout".into(), v);
            }
            "--global" => {
                a.flags.insert("global".into(), "true".into());
            }
            "--limit" | "--per-connection-delay" | "--user" => {
                let v = take(&mut it)?;
                a.flags.insert(name.trim_start_matches('-').to_owned(), v);
            }
            "-e" | "--if-empty" => {
                a.flags.insert("if-empty".into(), "true".into());
            }
            "-u" | "--if-unused" => {
                a.flags.insert("if-unused".into(), "true".into());
            }
            "--priority" | "--apply-to" => {
                let v = take(&mut it)?;
                a.flags.insert(name.trim_start_matches('-').to_owned(), v);
            }
            _ if arg.starts_with('-') && arg.len() > 1 => return Err(usage(format!("unknown option '{arg}'"))),
            _ if a.command.is_none() => a.command = Some(arg),
            _ => a.positional.push(arg),
        }
    }
    Ok(a)
}

/// The limit names in a `GET /api/{vhost,user}-limits/{name}` answer.
fn limit_names(items: &Value) -> Vec<String> {
    items.get(0).and_then(|i| i["value"].as_object()).map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// A limits definition (JSON object of integer limits among `known`), checked whole before
/// anything changes, as rabbitmqctl does.
fn limits_definition(text: &str, known: &[&str]) -> Result<serde_json::Map<String, Value>, Failure> {
    let def: Value =
        serde_json::from_str(text).map_err(|e| Failure(EX_DATAERR, format!("could not parse JSON document: {e}")))?;
    let Value::Object(def) = def else {
        return Err(Failure(EX_DATAERR, "the definition must be a JSON object".into()));
    };
    for (name, value) in &def {
        if !known.contains(&name.as_str()) {
            return Err(Failure(EX_DATAERR, format!("Validation failed\n\nUnrecognised terms [{name}] in limits")));
        }
        if !value.is_i64() {
            return Err(Failure(EX_DATAERR, format!("Validation failed\n\n{name} must be an integer, got {value}")));
        }
    }
    Ok(def)
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest(name: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .map(|c| (distance(name, c.name), c.name))
        .min()
        .filter(|(d, _)| *d <= name.len().max(3) / 2 + 1)
        .map(|(_, n)| n)
}

fn print_usage() {
    println!("Usage\n\nwarrenctl [--node <node>] [--data-dir <dir>] [-q] [--formatter json|table] <command> [<command options>]\n");
    println!("Commands:\n");
    for c in COMMANDS {
        println!("    {:<26}{}", c.name, c.about);
    }
    println!("\nUse 'warrenctl help <command>' or 'warrenctl <command> --help' for a command's arguments.");
}

fn command_help(c: &Command) {
    println!("Usage\n\nwarrenctl [--node <node>] [-q] [--formatter json|table] {} {}\n\n{}", c.name, c.args, c.about);
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(Failure(code, msg)) => {
            eprintln!("Error: {msg}");
            return ExitCode::from(code);
        }
    };
    let Some(name) = args.command.clone() else {
        print_usage();
        return ExitCode::from(if args.help { EX_OK } else { EX_USAGE });
    };
    if name == "help" {
        match args.positional.first().and_then(|n| COMMANDS.iter().find(|c| c.name == n)) {
            Some(c) => command_help(c),
            None => print_usage(),
        }
        return ExitCode::from(EX_OK);
    }
    let Some(cmd) = COMMANDS.iter().find(|c| c.name == name) else {
        eprintln!("Command '{name}' not found.");
        if let Some(c) = closest(&name) {
            eprintln!("Did you mean '{c}'?");
        }
        return ExitCode::from(EX_USAGE);
    };
    if args.help {
        command_help(cmd);
        return ExitCode::from(EX_OK);
    }
    // await_startup also waits for the node's control file, written as it starts listening.
    let wait_secs = args.flags.get("timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(300);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
    let ctl = loop {
        match Ctl::connect(args.clone()) {
            Ok(c) => break c,
            Err(_) if cmd.name == "await_startup" && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(Failure(code, msg)) => {
                eprintln!("Error: {msg}");
                return ExitCode::from(code);
            }
        }
    };
    match ctl.run(cmd) {
        Ok(()) => ExitCode::from(EX_OK),
        Err(Failure(code, msg)) => {
            if code == EX_USAGE {
                eprintln!("Error (argument validation): {msg}");
                command_help(cmd);
            } else {
                eprintln!("Error:\n{msg}");
            }
            ExitCode::from(code)
        }
    }
}

struct Ctl {
    args: Args,
    target: Target,
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A value as rabbitmqctl prints it in a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(cell).collect::<Vec<_>>().join(", ")),
        Value::Object(o) if o.is_empty() => "[]".into(),
        other => other.to_string(),
    }
}

impl Ctl {
    fn connect(args: Args) -> Result<Ctl, Failure> {
        let target = match &args.node {
            Some(node) => {
                let rest = node.strip_prefix("http://").unwrap_or(node);
                let (userinfo, host) = match rest.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, rest),
                };
                let host = host.trim_end_matches('/');
                let addr = if host.contains(':') { host.to_owned() } else { format!("{host}:15672") };
                let (user, pass) = match userinfo.and_then(|u| u.split_once(':')) {
                    Some((u, p)) => (u.to_owned(), p.to_owned()),
                    None => (
                        args.username.clone().unwrap_or_else(|| "guest".into()),
                        args.password.clone().unwrap_or_else(|| "guest".into()),
                    ),
                };
                let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                Target { addr, auth: ("Authorization".into(), format!("Basic {basic}")) }
            }
            None => {
                let dir = args
                    .data_dir
                    .clone()
                    .or_else(|| std::env::var("WARREN_DATA_DIR").ok())
                    .unwrap_or_else(|| "./warren-data".into());
                let path = std::path::Path::new(&dir).join("control.json");
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Failure(
                        EX_UNAVAILABLE,
                        format!(
                            "unable to find a running node: cannot read {} ({e}). Is warren-server running with --data-dir {dir}? Use --data-dir, WARREN_DATA_DIR or -n.",
                            path.display()
                        ),
                    )
                })?;
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| Failure(EX_UNAVAILABLE, format!("malformed control file {}: {e}", path.display())))?;
                let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
                let (Some(addr), Some(secret)) = (field("management"), field("secret")) else {
                    return Err(Failure(EX_UNAVAILABLE, format!("malformed control file {}", path.display())));
                };
                Target { addr, auth: ("x-warren-control-secret".into(), secret) }
            }
        };
        Ok(Ctl { args, target })
    }

    fn vhost(&self) -> String {
        self.args.vhost.clone().unwrap_or_else(|| "/".into())
    }

    fn info(&self, line: String) {
        if !self.args.quiet && !self.args.json {
            println!("{line}");
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        self.call_with(method, path, body, &[])
    }

    fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, Failure> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r =
            http::request(&self.target, method, &format!("/api{path}"), bytes.as_deref(), headers).map_err(|e| {
                Failure(EX_UNAVAILABLE, format!("unable to perform an operation on node at {}: {e}", self.target.addr))
            })?;
        let v: Value =
            if r.body.is_empty() { Value::Null } else { serde_json::from_slice(&r.body).unwrap_or(Value::Null) };
        match r.status {
            200..=299 => Ok(v),
            status => {
                let reason = v.get("reason").and_then(Value::as_str).unwrap_or("").to_owned();
                let code = match status {
                    404 => EX_DATAERR,
                    401 => EX_NOPERM,
                    400 | 409 => EX_DATAERR,
                    _ => EX_SOFTWARE,
                };
                Err(Failure(code, if reason.is_empty() { format!("HTTP {status}") } else { reason }))
            }
        }
    }

    /// As rabbitmqctl: a limits definition replaces every limit the user or vhost had.
    fn replace_limits(&self, base: &str, current: Vec<String>, def: &serde_json::Map<String, Value>) -> CmdResult {
        for old in current.iter().filter(|n| !def.contains_key(*n)) {
            self.call("DELETE", &format!("{base}/{}", enc(old)), None)?;
        }
        for (name, value) in def {
            self.call("PUT", &format!("{base}/{}", enc(name)), Some(json!({"value": value})))?;
        }
        Ok(())
    }

    /// Names of the limits a vhost has.
    fn vhost_limit_names(&self, ev: &str) -> Result<Vec<String>, Failure> {
        Ok(limit_names(&self.call("GET", &format!("/vhost-limits/{ev}"), None)?))
    }

    fn node_name(&self) -> Result<String, Failure> {
        let v = self.call("GET", "/overview", None)?;
        Ok(v.get("node").and_then(Value::as_str).unwrap_or("warren@localhost").to_owned())
    }

    fn need(&self, n: usize, at_most: usize) -> CmdResult {
        let got = self.args.positional.len();
        if got < n {
            return Err(usage("not enough arguments"));
        }
        if got > at_most {
            return Err(usage("too many arguments"));
        }
        Ok(())
    }

    fn pos(&self, i: usize) -> &str {
        &self.args.positional[i]
    }

    /// Prints rows of `items` with `columns`, each a (column name, JSON path) pair.
    fn table(&self, items: &[Value], columns: &[(String, String)]) {
        let get = |v: &Value, path: &str| -> Value {
            if let Some(fixed) = path.strip_prefix('=') {
                return Value::String(fixed.to_owned());
            }
            path.split('.').try_fold(v, |v, k| v.get(k)).cloned().unwrap_or(Value::Null)
        };
        if self.args.json {
            let rows: Vec<Value> = items
                .iter()
                .map(|v| Value::Object(columns.iter().map(|(c, p)| (c.clone(), get(v, p))).collect()))
                .collect();
            println!("{}", Value::Array(rows));
            return;
        }
        if !self.args.quiet && !self.args.no_headers {
            println!("{}", columns.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join("\t"));
        }
        for v in items {
            println!("{}", columns.iter().map(|(_, p)| cell(&get(v, p))).collect::<Vec<_>>().join("\t"));
        }
    }

    /// The requested columns (positional arguments) or the defaults, mapped to API fields.
    fn columns(
        &self,
        defaults: &[&str],
        map: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, Failure> {
        let names: Vec<String> = if self.args.positional.is_empty() {
            defaults.iter().map(|s| s.to_string()).collect()
        } else {
            self.args.positional.clone()
        };
        names
            .into_iter()
            .map(|n| match map(&n) {
                Some(p) => Ok((n, p)),
                None => Err(usage(format!("Info key(s) {n} are not supported"))),
            })
            .collect()
    }

    fn run(&self, cmd: &Command) -> CmdResult {
        let v = self.vhost();
        let ev = enc(&v);
        match cmd.name {
            "status" => {
                self.need(0, 0)?;
                let o = self.call("GET", "/overview", None)?;
                let n = self.call("GET", &format!("/nodes/{}", enc(o["node"].as_str().unwrap_or(""))), None)?;
                if self.args.json {
                    println!("{}", json!({"overview": o, "node": n}));
                    return Ok(());
                }
                self.info(format!("Status of node {} ...", o["node"].as_str().unwrap_or("")));
                println!(
                    "Runtime\n\nOS PID: {}\nProduct name: {}\nProduct version: {}\nUptime (seconds): {}\nRunning: {}\n",
                    cell(&n["os_pid"]),
                    cell(&o["product_name"]),
                    cell(&o["product_version"]),
                    n["uptime"].as_u64().unwrap_or(0) / 1000,
                    cell(&n["running"])
                );
                println!(
                    "Alarms\n\n{}\n",
                    if n["mem_alarm"] == true || n["disk_free_alarm"] == true { "alarms in effect" } else { "(none)" }
                );
                println!("Listeners\n");
                for l in o["listeners"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "Interface: {}, port: {}, protocol: {}",
                        cell(&l["ip_address"]),
                        cell(&l["port"]),
                        cell(&l["protocol"])
                    );
                }
                let t = &o["object_totals"];
                println!(
                    "\nTotals\n\nConnection count: {}\nQueue count: {}\nVirtual host count: {}",
                    cell(&t["connections"]),
                    cell(&t["queues"]),
                    self.call("GET", "/vhosts", None)?.as_array().map_or(0, Vec::len)
                );
                Ok(())
            }
            "await_startup" => {
                self.need(0, 0)?;
                // The node answers once it has recovered and listens (it binds after recovery);
                // until then, or until it writes its control file, keep asking.
                let secs = self.args.flags.get("timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(300);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
                loop {
                    match self.call("GET", "/overview", None) {
                        Ok(_) => return Ok(()),
                        Err(f) if std::time::Instant::now() >= deadline => return Err(f),
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
                    }
                }
            }
            "cluster_status" => {
                self.need(0, 0)?;
                let name = self.node_name()?;
                let cluster = self.call("GET", "/cluster-name", None)?;
                let cluster = cluster.get("name").and_then(Value::as_str).unwrap_or(&name).to_owned();
                if self.args.json {
                    println!(
                        "{}",
                        json!({"cluster_name": cluster, "disk_nodes": [name], "running_nodes": [name], "alarms": [], "partitions": {}})
                    );
                    return Ok(());
                }
                self.info(format!("Cluster status of node {name} ..."));
                println!("Basics\n\nCluster name: {cluster}\n\nDisk Nodes\n\n{name}\n\nRunning Nodes\n\n{name}\n\nNetwork Partitions\n\n(none)\n\nAlarms\n\n(none)");
                Ok(())
            }
            "ping" => {
                self.need(0, 0)?;
                let name = self.node_name()?;
                self.info(format!("Will ping {name}. This only checks if the node is running and answering."));
                println!("Ping succeeded");
                Ok(())
            }
            "shutdown" => {
                self.need(0, 0)?;
                let name = self.node_name()?;
                let node = self.call("GET", &format!("/nodes/{}", enc(&name)), None)?;
                let pid = node["os_pid"]
                    .as_str()
                    .and_then(|p| p.parse::<u32>().ok())
                    .or(node["os_pid"].as_u64().map(|p| p as u32));
                let Some(pid) = pid else {
                    return Err(Failure(EX_SOFTWARE, "the node did not report its OS pid".into()));
                };
                let proc_dir = format!("/proc/{pid}");
                // Running: its /proc entry exists and is not a zombie (exited, not yet reaped).
                let running = || {
                    std::fs::read_to_string(format!("{proc_dir}/stat"))
                        .map(|s| {
                            s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()) != Some(Some('Z'))
                        })
                        .unwrap_or(false)
                };
                if !running() {
                    return Err(Failure(
                        EX_USAGE,
                        format!("node {name} (pid {pid}) is not on this machine; shutdown only stops a local node"),
                    ));
                }
                self.info(format!("Shutting down Warren node {name} running at PID {pid}"));
                self.call("POST", "/warren/node/stop", None)?;
                self.info(format!("Waiting for PID {pid} to terminate"));
                let secs = self.args.flags.get("timeout").and_then(|t| t.parse::<u64>().ok()).unwrap_or(120);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
                while running() {
                    if std::time::Instant::now() >= deadline {
                        return Err(Failure(EX_TEMPFAIL, format!("PID {pid} still runs after {secs} s")));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                self.info(format!("Warren node {name} running at PID {pid} successfully shut down"));
                Ok(())
            }
            "hash_password" => {
                self.need(1, 1)?;
                self.info("Will hash password.".into());
                println!("{}", hash_password(self.pos(0)));
                Ok(())
            }
            "set_vm_memory_high_watermark" => {
                self.need(1, 2)?;
                let body = match self.args.positional.as_slice() {
                    [kind, limit] if kind == "absolute" => json!({"absolute": parse_bytes(limit)?}),
                    [fraction] => {
                        let f: f64 = fraction.parse().map_err(|_| usage(format!("not a fraction: {fraction}")))?;
                        if !(0.0..=1.0).contains(&f) {
                            return Err(usage("the threshold should be a fraction between 0.0 and 1.0"));
                        }
                        json!({"fraction": f})
                    }
                    _ => return Err(usage("expected <fraction> or absolute <memory_limit>")),
                };
                let name = self.node_name()?;
                self.info(format!("Setting memory threshold on {name} to {} ...", self.args.positional.join(" ")));
                self.call("PUT", "/warren/node/limits/vm_memory_high_watermark", Some(body)).map(|_| ())
            }
            "set_disk_free_limit" => {
                self.need(1, 2)?;
                let body = match self.args.positional.as_slice() {
                    [kind, f] if kind == "mem_relative" => {
                        let f: f64 = f.parse().map_err(|_| usage(format!("not a number: {f}")))?;
                        json!({"mem_relative": f})
                    }
                    [limit] => json!({"bytes": parse_bytes(limit)?}),
                    _ => return Err(usage("expected <disk_limit> or mem_relative <fraction>")),
                };
                let name = self.node_name()?;
                self.info(format!("Setting disk free limit on {name} to {} ...", self.args.positional.join(" ")));
                self.call("PUT", "/warren/node/limits/disk_free_limit", Some(body)).map(|_| ())
            }
            "stop" | "stop_app" | "start_app" | "reset" | "force_reset" => {
                self.need(0, 0)?;
                let name = self.node_name()?;
                self.info(match cmd.name {
                    "stop" => format!("Stopping and halting node {name} ..."),
                    "stop_app" => format!("Stopping rabbit application on node {name} ..."),
                    "start_app" => format!("Starting node {name} ..."),
                    _ => format!("Resetting node {name} ..."),
                });
                let action = if cmd.name == "force_reset" { "reset" } else { cmd.name };
                match self.call("POST", &format!("/warren/node/{action}"), None) {
                    Err(Failure(_, reason)) if action == "reset" => Err(Failure(EX_UNAVAILABLE, reason)),
                    r => r.map(|_| ()),
                }
            }
            "add_user" => {
                self.need(2, 2)?;
                let u = self.pos(0);
                if self.call("GET", &format!("/users/{}", enc(u)), None).is_ok() {
                    return Err(Failure(EX_DATAERR, format!("User \"{u}\" already exists")));
                }
                self.info(format!("Adding user \"{u}\" ..."));
                self.call("PUT", &format!("/users/{}", enc(u)), Some(json!({"password": self.pos(1), "tags": ""})))?;
                Ok(())
            }
            "delete_user" => {
                self.need(1, 1)?;
                let u = self.pos(0);
                self.info(format!("Deleting user \"{u}\" ..."));
                self.call("DELETE", &format!("/users/{}", enc(u)), None)
                    .map_err(|_| Failure(EX_DATAERR, format!("User \"{u}\" does not exist")))?;
                Ok(())
            }
            "change_password" => {
                self.need(2, 2)?;
                let u = self.pos(0);
                let user = self
                    .call("GET", &format!("/users/{}", enc(u)), None)
                    .map_err(|_| Failure(EX_DATAERR, format!("User \"{u}\" does not exist")))?;
                self.info(format!("Changing password for user \"{u}\" ..."));
                self.call(
                    "PUT",
                    &format!("/users/{}", enc(u)),
                    Some(json!({"password": self.pos(1), "tags": user["tags"]})),
                )?;
                Ok(())
            }
            "set_user_tags" => {
                self.need(1, usize::MAX)?;
                let u = self.pos(0);
                let tags: Vec<&str> = self.args.positional[1..].iter().map(String::as_str).collect();
                let user = self
                    .call("GET", &format!("/users/{}", enc(u)), None)
                    .map_err(|_| Failure(EX_DATAERR, format!("User \"{u}\" does not exist")))?;
                self.info(format!("Setting tags for user \"{u}\" to [{}] ...", tags.join(", ")));
                let body = json!({"password_hash": user["password_hash"], "hashing_algorithm": user["hashing_algorithm"], "tags": tags});
                self.call("PUT", &format!("/users/{}", enc(u)), Some(body))?;
                Ok(())
            }
            "authenticate_user" => {
                self.need(2, 2)?;
                let u = self.pos(0);
                self.info(format!("Authenticating user \"{u}\" ..."));
                match self.call("POST", "/warren/authenticate", Some(json!({"username": u, "password": self.pos(1)}))) {
                    Ok(_) => {
                        println!("Success");
                        Ok(())
                    }
                    Err(Failure(EX_DATAERR, reason)) => {
                        Err(Failure(EX_DATAERR, format!("Error: failed to authenticate user \"{u}\"\n{reason}")))
                    }
                    Err(f) => Err(f),
                }
            }
            "clear_password" => {
                self.need(1, 1)?;
                let u = self.pos(0);
                let user = self
                    .call("GET", &format!("/users/{}", enc(u)), None)
                    .map_err(|_| Failure(EX_DATAERR, format!("User \"{u}\" does not exist")))?;
                self.info(format!("Clearing password for user \"{u}\" ..."));
                self.call(
                    "PUT",
                    &format!("/users/{}", enc(u)),
                    Some(json!({"password_hash": "", "tags": user["tags"]})),
                )?;
                Ok(())
            }
            "list_users" => {
                self.need(0, 0)?;
                self.info("Listing users ...".into());
                let items = self.call("GET", "/users", None)?;
                let cols = vec![("user".to_owned(), "name".to_owned()), ("tags".to_owned(), "tags".to_owned())];
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "add_vhost" => {
                self.need(1, 1)?;
                let name = self.pos(0);
                self.info(format!("Adding vhost \"{name}\" ..."));
                self.call("PUT", &format!("/vhosts/{}", enc(name)), Some(json!({})))?;
                Ok(())
            }
            "delete_vhost" => {
                self.need(1, 1)?;
                let name = self.pos(0);
                self.info(format!("Deleting vhost \"{name}\" ..."));
                self.call("DELETE", &format!("/vhosts/{}", enc(name)), None)
                    .map_err(|_| Failure(EX_DATAERR, format!("Virtual host '{name}' does not exist")))?;
                Ok(())
            }
            "set_user_limits" => {
                self.need(2, 2)?;
                let u = self.pos(0);
                let def = limits_definition(self.pos(1), &["max-connections", "max-channels"])?;
                let eu = enc(u);
                let current = self
                    .call("GET", &format!("/user-limits/{eu}"), None)
                    .map_err(|_| Failure(EX_DATAERR, format!("User \"{u}\" does not exist")))?;
                self.info(format!("Setting user limits to \"{}\" for user \"{u}\" ...", self.pos(1)));
                self.replace_limits(&format!("/user-limits/{eu}"), limit_names(&current), &def)
            }
            "clear_user_limits" => {
                self.need(2, 2)?;
                let (u, which) = (self.pos(0), self.pos(1));
                let eu = enc(u);
                let current = self
                    .call("GET", &format!("/user-limits/{eu}"), None)
                    .map_err(|_| Failure(EX_DATAERR, format!("User \"{u}\" does not exist")))?;
                self.info(format!("Clearing \"{which}\" limit for user \"{u}\" ..."));
                for name in limit_names(&current) {
                    if which == "all" || name == which {
                        self.call("DELETE", &format!("/user-limits/{eu}/{}", enc(&name)), None)?;
                    }
                }
                Ok(())
            }
            "list_user_limits" => {
                self.need(0, 0)?;
                match self.args.flags.get("user") {
                    Some(u) => {
                        self.info(format!("Listing limits for user \"{u}\" ..."));
                        let items = self
                            .call("GET", &format!("/user-limits/{}", enc(u)), None)
                            .map_err(|_| Failure(EX_DATAERR, format!("User \"{u}\" does not exist")))?;
                        if let Some(value) = items.get(0).map(|i| &i["value"]) {
                            println!("{value}");
                        }
                    }
                    None => {
                        self.info("Listing limits for all users ...".into());
                        let items = self.call("GET", "/user-limits", None)?;
                        let cols =
                            vec![("user".to_owned(), "user".to_owned()), ("limits".to_owned(), "value".to_owned())];
                        self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                    }
                }
                Ok(())
            }
            "set_vhost_limits" => {
                self.need(1, 1)?;
                let def = limits_definition(self.pos(0), &["max-connections", "max-queues"])?;
                self.info(format!("Applying limits for vhost \"{v}\" ..."));
                self.replace_limits(&format!("/vhost-limits/{ev}"), self.vhost_limit_names(&ev)?, &def)
            }
            "clear_vhost_limits" => {
                self.need(0, 0)?;
                self.info(format!("Clearing vhost \"{v}\" limits ..."));
                for name in self.vhost_limit_names(&ev)? {
                    self.call("DELETE", &format!("/vhost-limits/{ev}/{}", enc(&name)), None)?;
                }
                Ok(())
            }
            "list_vhost_limits" => {
                self.need(0, 0)?;
                if self.args.flags.contains_key("global") {
                    self.info("Listing limits for all vhosts ...".into());
                    let items = self.call("GET", "/vhost-limits", None)?;
                    let cols =
                        vec![("vhost".to_owned(), "vhost".to_owned()), ("limits".to_owned(), "value".to_owned())];
                    self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                } else {
                    self.info(format!("Listing limits for vhost \"{v}\" ..."));
                    let items = self.call("GET", &format!("/vhost-limits/{ev}"), None)?;
                    if let Some(value) = items.get(0).map(|i| &i["value"]) {
                        println!("{value}");
                    }
                }
                Ok(())
            }
            "list_vhosts" => {
                self.info("Listing vhosts ...".into());
                let cols = self.columns(&["name"], &|c| {
                    matches!(c, "name" | "tracing" | "description" | "tags" | "default_queue_type" | "messages")
                        .then(|| c.to_owned())
                })?;
                let items = self.call("GET", "/vhosts", None)?;
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "set_permissions" => {
                self.need(4, 4)?;
                let u = self.pos(0);
                self.info(format!("Setting permissions for user \"{u}\" in vhost \"{v}\" ..."));
                let body = json!({"configure": self.pos(1), "write": self.pos(2), "read": self.pos(3)});
                self.call("PUT", &format!("/permissions/{ev}/{}", enc(u)), Some(body)).map_err(|Failure(c, r)| {
                    if c == EX_DATAERR && r == "Not Found" {
                        Failure(c, format!("Virtual host '{v}' or user '{u}' does not exist"))
                    } else {
                        Failure(c, r)
                    }
                })?;
                Ok(())
            }
            "clear_permissions" => {
                self.need(1, 1)?;
                let u = self.pos(0);
                self.info(format!("Clearing permissions for user \"{u}\" in vhost \"{v}\" ..."));
                // RabbitMQ compat: clearing permissions that are not set succeeds.
                match self.call("DELETE", &format!("/permissions/{ev}/{}", enc(u)), None) {
                    Err(Failure(EX_DATAERR, _)) | Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            "list_permissions" => {
                self.need(0, 0)?;
                self.info(format!("Listing permissions for vhost \"{v}\" ..."));
                let items = self.call("GET", &format!("/vhosts/{ev}/permissions"), None)?;
                let cols: Vec<(String, String)> =
                    ["user", "configure", "write", "read"].iter().map(|c| (c.to_string(), c.to_string())).collect();
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "list_user_permissions" => {
                self.need(1, 1)?;
                let u = self.pos(0);
                self.info(format!("Listing permissions for user \"{u}\" ..."));
                let items = self.call("GET", &format!("/users/{}/permissions", enc(u)), None)?;
                let cols: Vec<(String, String)> =
                    ["vhost", "configure", "write", "read"].iter().map(|c| (c.to_string(), c.to_string())).collect();
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "set_topic_permissions" => {
                self.need(4, 4)?;
                let (u, x) = (self.pos(0), self.pos(1));
                self.info(format!("Setting topic permissions on \"{x}\" for user \"{u}\" in vhost \"{v}\" ..."));
                let body = json!({"exchange": x, "write": self.pos(2), "read": self.pos(3)});
                self.call("PUT", &format!("/topic-permissions/{ev}/{}", enc(u)), Some(body))?;
                Ok(())
            }
            "clear_topic_permissions" => {
                self.need(1, 2)?;
                let u = self.pos(0);
                let mut path = format!("/topic-permissions/{ev}/{}", enc(u));
                match self.args.positional.get(1) {
                    Some(x) => {
                        self.info(format!(
                            "Clearing topic permissions on \"{x}\" for user \"{u}\" in vhost \"{v}\" ..."
                        ));
                        path.push_str(&format!("?exchange={}", enc(x)));
                    }
                    None => self.info(format!("Clearing topic permissions for user \"{u}\" in vhost \"{v}\" ...")),
                }
                match self.call("DELETE", &path, None) {
                    Err(Failure(EX_DATAERR, _)) | Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            "list_topic_permissions" => {
                self.need(0, 0)?;
                self.info(format!("Listing topic permissions for vhost \"{v}\" ..."));
                let items = self.call("GET", &format!("/vhosts/{ev}/topic-permissions"), None)?;
                let cols: Vec<(String, String)> =
                    ["user", "exchange", "write", "read"].iter().map(|c| (c.to_string(), c.to_string())).collect();
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "list_queues" => {
                self.info(format!("Timeout: 60.0 seconds ...\nListing queues for vhost {v} ..."));
                let cols = self.columns(&["name", "messages"], &|c| {
                    Some(match c {
                        "name"
                        | "durable"
                        | "auto_delete"
                        | "arguments"
                        | "policy"
                        | "messages"
                        | "messages_ready"
                        | "messages_unacknowledged"
                        | "consumers"
                        | "exclusive"
                        | "state"
                        | "type"
                        | "vhost"
                        | "consumer_utilisation"
                        | "consumer_capacity"
                        | "exclusive_consumer_tag"
                        | "message_bytes_ready" => c.to_owned(),
                        "pid" | "owner_pid" => "owner_pid_details.name".into(),
                        "memory" | "message_bytes" => "message_bytes_ready".into(),
                        _ => return None,
                    })
                })?;
                let items = self.call("GET", &format!("/queues/{ev}"), None)?;
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "list_exchanges" => {
                self.info(format!("Listing exchanges for vhost {v} ..."));
                let cols = self.columns(&["name", "type"], &|c| {
                    matches!(
                        c,
                        "name" | "type" | "durable" | "auto_delete" | "internal" | "arguments" | "policy" | "vhost"
                    )
                    .then(|| c.to_owned())
                })?;
                let items = self.call("GET", &format!("/exchanges/{ev}"), None)?;
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "list_bindings" => {
                self.info(format!("Listing bindings for vhost {v}..."));
                let defaults =
                    ["source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"];
                let cols = self.columns(&defaults, &|c| {
                    Some(match c {
                        "source_name" => "source".into(),
                        "source_kind" => "=exchange".into(),
                        "destination_name" => "destination".into(),
                        "destination_kind" => "destination_type".into(),
                        "routing_key" | "arguments" | "vhost" => c.to_owned(),
                        _ => return None,
                    })
                })?;
                let items = self.call("GET", &format!("/bindings/{ev}"), None)?;
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "list_connections" => {
                self.info("Listing connections ...".into());
                let cols = self.columns(&["user", "peer_host", "peer_port", "state"], &|c| {
                    Some(match c {
                        "pid" => "name".into(),
                        "name" | "user" | "vhost" | "peer_host" | "peer_port" | "host" | "port" | "state"
                        | "channels" | "protocol" | "auth_mechanism" | "ssl" | "frame_max" | "channel_max"
                        | "timeout" | "client_properties" | "connected_at" | "type" | "user_provided_name" => {
                            c.to_owned()
                        }
                        _ => return None,
                    })
                })?;
                let items = self.call("GET", "/connections", None)?;
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "list_channels" => {
                self.info("Listing channels ...".into());
                let cols = self.columns(&["pid", "user", "consumer_count", "messages_unacknowledged"], &|c| {
                    Some(match c {
                        "pid" | "name" => "name".into(),
                        "connection" => "connection_details.name".into(),
                        "user"
                        | "vhost"
                        | "number"
                        | "consumer_count"
                        | "messages_unacknowledged"
                        | "messages_unconfirmed"
                        | "prefetch_count"
                        | "global_prefetch_count"
                        | "confirm"
                        | "transactional"
                        | "state" => c.to_owned(),
                        _ => return None,
                    })
                })?;
                let items = self.call("GET", "/channels", None)?;
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "list_consumers" => {
                self.info(format!("Listing consumers in vhost {v} ..."));
                let defaults = [
                    "queue_name",
                    "channel_pid",
                    "consumer_tag",
                    "ack_required",
                    "prefetch_count",
                    "active",
                    "arguments",
                ];
                let cols = self.columns(&defaults, &|c| {
                    Some(match c {
                        "queue_name" => "queue.name".into(),
                        "channel_pid" => "channel_details.name".into(),
                        "activity_status" | "consumer_tag" | "ack_required" | "prefetch_count" | "active"
                        | "arguments" | "exclusive" => c.to_owned(),
                        _ => return None,
                    })
                })?;
                let items = self.call("GET", &format!("/consumers/{ev}"), None)?;
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "close_connection" => {
                self.need(2, 2)?;
                let (name, why) = (self.pos(0), self.pos(1));
                self.info(format!("Closing connection \"{name}\", reason: {why}..."));
                // The reason travels in the X-Reason header, as with RabbitMQ's API.
                self.call_with("DELETE", &format!("/connections/{}", enc(name)), None, &[("X-Reason", why)])?;
                Ok(())
            }
            "close_all_connections" => {
                self.need(1, 1)?;
                let why = self.pos(0);
                let global = self.args.flags.contains_key("global");
                let number = |k: &str| -> Result<Option<u64>, Failure> {
                    self.args
                        .flags
                        .get(k)
                        .map(|s| s.parse::<u64>().map_err(|_| usage(format!("--{k} must be a non-negative integer"))))
                        .transpose()
                };
                let limit = number("limit")?.unwrap_or(u64::MAX) as usize;
                let delay = number("per-connection-delay")?.unwrap_or(0);
                let path = if global { "/connections".to_owned() } else { format!("/vhosts/{ev}/connections") };
                if global {
                    self.info(format!("Closing all connections to node {} (across all vhosts)", self.node_name()?));
                } else {
                    self.info(format!("Closing all connections in vhost {v} ..."));
                }
                let items = self.call("GET", &path, None)?;
                for c in items.as_array().map_or(&[][..], Vec::as_slice).iter().take(limit) {
                    let Some(name) = c["name"].as_str() else { continue };
                    // Gone already (closed by its client meanwhile) is fine.
                    let _ =
                        self.call_with("DELETE", &format!("/connections/{}", enc(name)), None, &[("X-Reason", why)]);
                    if delay > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(delay));
                    }
                }
                Ok(())
            }
            "purge_queue" => {
                self.need(1, 1)?;
                let q = self.pos(0);
                self.info(format!("Purging queue '{q}' in vhost '{v}' ..."));
                self.call("DELETE", &format!("/queues/{ev}/{}/contents", enc(q)), None)?;
                Ok(())
            }
            "delete_queue" => {
                self.need(1, 1)?;
                let q = self.pos(0);
                self.info(format!("Deleting queue '{q}' on vhost '{v}' ..."));
                let before = self.call("GET", &format!("/queues/{ev}/{}", enc(q)), None)?;
                let mut path = format!("/queues/{ev}/{}", enc(q));
                let flags: Vec<String> = ["if-empty", "if-unused"]
                    .iter()
                    .filter(|f| self.args.flags.contains_key(**f))
                    .map(|f| format!("{f}=true"))
                    .collect();
                if !flags.is_empty() {
                    path.push('?');
                    path.push_str(&flags.join("&"));
                }
                self.call("DELETE", &path, None)?;
                self.info(format!("Queue was successfully deleted with {} messages", cell(&before["messages_ready"])));
                Ok(())
            }
            "set_policy" | "set_operator_policy" => {
                let (kind, path) = if cmd.name == "set_policy" {
                    ("policy", "policies")
                } else {
                    ("operator policy override", "operator-policies")
                };
                self.need(3, 3)?;
                let (name, pattern, definition) = (self.pos(0), self.pos(1), self.pos(2));
                let def: Value = serde_json::from_str(definition)
                    .map_err(|e| Failure(EX_DATAERR, format!("could not parse JSON document: {e}")))?;
                let priority: i64 = match self.args.flags.get("priority") {
                    None => 0,
                    Some(p) => p.parse().map_err(|_| usage(format!("invalid priority '{p}'")))?,
                };
                let apply_to = self.args.flags.get("apply-to").cloned().unwrap_or_else(|| "all".into());
                self.info(format!(
                    "Setting {kind} \"{name}\" for pattern \"{pattern}\" to \"{definition}\" with priority \"{priority}\" for vhost \"{v}\" ..."
                ));
                let body = json!({"pattern": pattern, "definition": def, "priority": priority, "apply-to": apply_to});
                self.call("PUT", &format!("/{path}/{ev}/{}", enc(name)), Some(body))?;
                Ok(())
            }
            "clear_policy" | "clear_operator_policy" => {
                let (kind, path) = if cmd.name == "clear_policy" {
                    ("policy", "policies")
                } else {
                    ("operator policy", "operator-policies")
                };
                self.need(1, 1)?;
                let name = self.pos(0);
                self.info(format!("Clearing {kind} \"{name}\" on vhost \"{v}\" ..."));
                self.call("DELETE", &format!("/{path}/{ev}/{}", enc(name)), None)?;
                Ok(())
            }
            "list_policies" | "list_operator_policies" => {
                let (kind, path) = if cmd.name == "list_policies" {
                    ("policies", "policies")
                } else {
                    ("operator policy overrides", "operator-policies")
                };
                self.need(0, 0)?;
                self.info(format!("Listing {kind} for vhost \"{v}\" ..."));
                let items = self.call("GET", &format!("/{path}/{ev}"), None)?;
                let cols: Vec<(String, String)> = ["vhost", "name", "pattern", "apply-to", "definition", "priority"]
                    .iter()
                    .map(|c| (c.to_string(), c.to_string()))
                    .collect();
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "check_running" => {
                self.need(0, 0)?;
                let name = self.node_name()?;
                let n = self.call("GET", &format!("/nodes/{}", enc(&name)), None)?;
                if n["running"] != true {
                    return Err(Failure(
                        EX_UNAVAILABLE,
                        format!("RabbitMQ on node {name} is not running or has not fully booted yet"),
                    ));
                }
                println!("RabbitMQ on node {name} is fully booted and running");
                Ok(())
            }
            "check_local_alarms" | "check_alarms" | "alarms" => {
                self.need(0, 0)?;
                let name = self.node_name()?;
                let n = self.call("GET", &format!("/nodes/{}", enc(&name)), None)?;
                let alarms: Vec<&str> = [("memory", "mem_alarm"), ("disk", "disk_free_alarm")]
                    .into_iter()
                    .filter(|(_, key)| n[*key] == true)
                    .map(|(alarm, _)| alarm)
                    .collect();
                if self.args.json {
                    println!(
                        "{}",
                        json!(alarms.iter().map(|a| json!({"node": name, "resource": a})).collect::<Vec<_>>())
                    );
                } else if alarms.is_empty() {
                    println!(
                        "Node {name} reported no {}",
                        if cmd.name == "check_local_alarms" { "local alarms" } else { "alarms, local or clustered" }
                    );
                } else if cmd.name == "alarms" {
                    for a in &alarms {
                        println!("{a} resource limit alarm on node {name}");
                    }
                }
                if !alarms.is_empty() && cmd.name != "alarms" {
                    let list: Vec<String> =
                        alarms.iter().map(|a| format!("{a} resource limit alarm on node {name}")).collect();
                    return Err(Failure(EX_UNAVAILABLE, format!("Activated alarms:\n{}", list.join("\n"))));
                }
                Ok(())
            }
            "check_port_connectivity" => {
                self.need(0, 0)?;
                let o = self.call("GET", "/overview", None)?;
                let name = o["node"].as_str().unwrap_or("").to_owned();
                // The listeners bind every address; reach them where warrenctl reaches the API.
                let host = self.target.addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h).to_owned();
                let mut ok_ports = Vec::new();
                let mut failed = Vec::new();
                for l in o["listeners"].as_array().cloned().unwrap_or_default() {
                    let port = l["port"].as_u64().unwrap_or(0);
                    let addr = format!("{host}:{port}");
                    let reached =
                        std::net::ToSocketAddrs::to_socket_addrs(&addr).ok().and_then(|mut a| a.next()).is_some_and(
                            |a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok(),
                        );
                    if reached {
                        ok_ports.push(port.to_string());
                    } else {
                        failed.push(format!("{} on port {port}", cell(&l["protocol"])));
                    }
                }
                if !failed.is_empty() {
                    return Err(Failure(
                        EX_UNAVAILABLE,
                        format!("Connection to ports of node {name} failed: {}", failed.join(", ")),
                    ));
                }
                println!("Successfully connected to ports {} on node {name}.", ok_ports.join(", "));
                Ok(())
            }
            "check_virtual_hosts" => {
                self.need(0, 0)?;
                let name = self.node_name()?;
                let vhosts = self.call("GET", "/vhosts", None)?;
                let down: Vec<String> = vhosts
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|v| v["cluster_state"].as_object().is_some_and(|m| m.values().any(|s| s != "running")))
                    .map(|v| cell(&v["name"]))
                    .collect();
                if !down.is_empty() {
                    return Err(Failure(EX_UNAVAILABLE, format!("Some virtual hosts are down: {}", down.join(", "))));
                }
                println!("Node {name} reported all vhosts as running");
                Ok(())
            }
            "listeners" => {
                self.need(0, 0)?;
                let o = self.call("GET", "/overview", None)?;
                let listeners = o["listeners"].as_array().cloned().unwrap_or_default();
                if self.args.json {
                    println!("{}", Value::Array(listeners));
                    return Ok(());
                }
                self.info(format!("Asking node {} to report its protocol listeners ...", cell(&o["node"])));
                for l in &listeners {
                    let purpose = match l["protocol"].as_str().unwrap_or("") {
                        "amqp" => "AMQP 0-9-1",
                        "amqp/ssl" => "AMQP 0-9-1 over TLS",
                        "http" => "HTTP API",
                        "https" => "HTTP API over TLS (HTTPS)",
                        _ => "",
                    };
                    println!(
                        "Interface: {}, port: {}, protocol: {}, purpose: {purpose}",
                        cell(&l["ip_address"]),
                        cell(&l["port"]),
                        cell(&l["protocol"])
                    );
                }
                Ok(())
            }
            "server_version" => {
                self.need(0, 0)?;
                let o = self.call("GET", "/overview", None)?;
                self.info(format!("Asking node {} for its RabbitMQ version...", cell(&o["node"])));
                println!("{}", cell(&o["rabbitmq_version"]));
                Ok(())
            }
            "set_cluster_name" => {
                self.need(1, 1)?;
                let name = self.pos(0);
                self.info(format!("Setting cluster name to {name} ..."));
                self.call("PUT", "/cluster-name", Some(json!({"name": name}))).map(|_| ())
            }
            "set_global_parameter" => {
                self.need(2, 2)?;
                let (name, value) = (self.pos(0), self.pos(1));
                let parsed: Value = serde_json::from_str(value)
                    .map_err(|e| Failure(EX_DATAERR, format!("could not parse JSON document: {e}")))?;
                self.info(format!("Setting global runtime parameter \"{name}\" to \"{value}\" ..."));
                let body = json!({"name": name, "value": parsed});
                self.call("PUT", &format!("/global-parameters/{}", enc(name)), Some(body)).map(|_| ())
            }
            "clear_global_parameter" => {
                self.need(1, 1)?;
                let name = self.pos(0);
                self.info(format!("Clearing global runtime parameter \"{name}\" ..."));
                self.call("DELETE", &format!("/global-parameters/{}", enc(name)), None).map(|_| ())
            }
            "list_global_parameters" => {
                self.need(0, 0)?;
                self.info("Listing global runtime parameters ...".into());
                let mut items = self.call("GET", "/global-parameters", None)?;
                // As rabbitmqctl: a table shows each value as JSON text ("name" with its quotes).
                if !self.args.json {
                    for item in items.as_array_mut().into_iter().flatten() {
                        let text = item["value"].to_string();
                        item["value"] = Value::String(text);
                    }
                }
                let cols: Vec<(String, String)> =
                    ["name", "value"].iter().map(|c| (c.to_string(), c.to_string())).collect();
                self.table(items.as_array().map_or(&[], Vec::as_slice), &cols);
                Ok(())
            }
            "trace_on" | "trace_off" => {
                self.need(0, 0)?;
                let on = cmd.name == "trace_on";
                let name = self.node_name()?;
                self.info(format!(
                    "{} tracing for vhost \"{v}\" on node {name} ...",
                    if on { "Starting" } else { "Stopping" }
                ));
                if self.call("GET", &format!("/vhosts/{ev}"), None).is_err() {
                    return Err(Failure(EX_DATAERR, format!("Virtual host '{v}' does not exist")));
                }
                self.call("PUT", &format!("/vhosts/{ev}"), Some(json!({"tracing": on}))).map(|_| ())
            }
            "list_feature_flags" => {
                self.need(0, 0)?;
                self.info("Listing feature flags ...".into());
                let flags = self.call("GET", "/feature-flags", None)?;
                let cols = vec![("name".to_owned(), "name".to_owned()), ("state".to_owned(), "state".to_owned())];
                self.table(flags.as_array().map(Vec::as_slice).unwrap_or(&[]), &cols);
                Ok(())
            }
            "enable_feature_flag" => {
                self.need(1, 1)?;
                match self.pos(0) {
                    // What upgrade runbooks run: nothing is left disabled, so nothing to do.
                    "all" => {
                        self.info("Enabling all feature flags ...".into());
                        Ok(())
                    }
                    f => Err(Failure(
                        EX_DATAERR,
                        format!(
                            "unsupported feature flag '{f}': Warren has no feature flags, its features are always on"
                        ),
                    )),
                }
            }
            "export_definitions" => {
                self.need(1, 1)?;
                let path = self.pos(0);
                let defs = self.call("GET", "/definitions", None)?;
                let text = serde_json::to_string_pretty(&defs).unwrap_or_default();
                if path == "-" {
                    println!("{text}");
                } else {
                    self.info(format!("Exporting definitions in JSON to a file at \"{path}\" ..."));
                    std::fs::write(path, text + "\n")
                        .map_err(|e| Failure(EX_SOFTWARE, format!("cannot write {path}: {e}")))?;
                }
                Ok(())
            }
            "import_definitions" => {
                self.need(1, 1)?;
                let path = self.pos(0);
                let mut text = String::new();
                if path == "-" {
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map_err(|e| Failure(EX_DATAERR, format!("cannot read standard input: {e}")))?;
                } else {
                    self.info(format!("Importing definitions in JSON from a file at \"{path}\" ..."));
                    text = std::fs::read_to_string(path)
                        .map_err(|e| Failure(EX_DATAERR, format!("cannot read {path}: {e}")))?;
                }
                let defs: Value = serde_json::from_str(&text)
                    .map_err(|e| Failure(EX_DATAERR, format!("could not parse JSON document: {e}")))?;
                self.call("POST", "/definitions", Some(defs))?;
                self.info(
                    "Successfully started definition import. This process is asynchronous and can take some time."
                        .into(),
                );
                Ok(())
            }
            other => Err(Failure(EX_SOFTWARE, format!("command {other} is not implemented"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a mistyped command finds its closest name.
    #[test]
    fn did_you_mean() {
        assert_eq!(closest("set_permission"), Some("set_permissions"));
        assert_eq!(closest("list_queue"), Some("list_queues"));
        assert_eq!(closest("xyzzy_frobnicate_everything"), None);
    }

    /// Proves global and command flags parse wherever they appear.
    #[test]
    fn parses_flags() {
        let argv = ["-q", "list_queues", "-p", "v", "name", "--formatter", "json"].map(String::from).to_vec();
        let a = parse_args(argv).ok().expect("parses");
        assert!(a.quiet && a.json);
        assert_eq!(
            (a.command.as_deref(), a.vhost.as_deref(), a.positional.as_slice()),
            (Some("list_queues"), Some("v"), &["name".to_owned()][..])
        );
    }
}
