//! `[metrics]` and `[[logs]]` of the agent config: the sections as written (serde, spans kept)
//! and their validated form. No I/O.
//!
//! ```toml
//! region = "eu-west-1"                  # top level; default: AWS_REGION, profile, IMDS
//!
//! [metrics]
//! interval = "60s"                      # 1s..5m; under 60s points are stored high-resolution
//! namespace = "Bosun/Host"
//! dimensions = { Env = "prod" }         # added to InstanceId on every point
//! processes = ["k3s", "dockerd", "containerd", "bosund"]
//! backlog = "24h"                       # points kept on disk through an outage
//! instance_id = "i-0123"                # default: IMDS, else the host name
//!
//! [[logs]]
//! kind = "file"                         # file (default) | journald | cri
//! path = "/var/log/app/*.log"           # glob (`*`, `?` in any component); cri: /var/log/pods/*/*/*.log
//! log_group = "/bosun/prod"
//! log_stream = "{instance_id}/{file}"   # {instance_id} {hostname} {file}; cri: {namespace} {pod} {container}
//! multiline_start = '^\d{4}-\d{2}-\d{2}' # a line matching starts an event; others continue it
//! timestamp_regex = '^(\S+ \S+)'        # group 1 parsed with timestamp_format, else read time
//! timestamp_format = "%Y-%m-%d %H:%M:%S%.f"
//! include = ["ERROR|WARN"]              # keep only events matching one of these
//! exclude = ["healthz"]                 # drop events matching one of these
//! retention_days = 30                   # when bosund creates the group
//! flush_interval = "5s"                 # longest an event waits to be batched
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use bosun_model::playbook::Diagnostic;

/// Default metrics interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default metrics namespace (the stack's alarms and the IAM condition use it).
pub const DEFAULT_NAMESPACE: &str = "Bosun/Host";
/// Default processes whose CPU and RSS are reported.
pub const DEFAULT_PROCESSES: &[&str] = &["k3s", "dockerd", "containerd", "bosund"];
/// Default age past which unsent metric points are dropped.
pub const DEFAULT_BACKLOG: Duration = Duration::from_secs(24 * 3600);
/// Default stream name.
pub const DEFAULT_STREAM: &str = "{instance_id}";
/// Default longest wait of an event before its batch is sent.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(5);
/// Where k3s (kubelet) writes container logs.
pub const DEFAULT_CRI_PATH: &str = "/var/log/pods/*/*/*.log";
/// Retention values CloudWatch Logs accepts.
const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// `[metrics]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    interval: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
    processes: Option<Vec<String>>,
    backlog: Option<Spanned<String>>,
    instance_id: Option<String>,
}

/// `[[logs]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    log_group: Spanned<String>,
    log_stream: Option<Spanned<String>>,
    multiline_start: Option<Spanned<String>>,
    timestamp_regex: Option<Spanned<String>>,
    timestamp_format: Option<Spanned<String>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    retention_days: Option<Spanned<u32>>,
    flush_interval: Option<Spanned<String>>,
    instance_id: Option<String>,
}

/// A compiled regular expression that compares by its text (configs are compared on reload).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// Where a telemetry section was written: errors found when bosund starts (no AWS region)
/// point at it like a config error. Not part of what is shipped: any two are equal, so moving
/// a section in the file does not restart telemetry on SIGHUP.
#[derive(Debug, Clone)]
pub struct Origin {
    source: bosun_model::playbook::Source,
    span: Range<usize>,
}

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Origin {
    /// The section at `span` of `source`.
    pub fn new(source: bosun_model::playbook::Source, span: Range<usize>) -> Self {
        Origin { source, span }
    }

    /// `message` (and `help`) rendered as a located diagnostic, like a config error.
    pub fn diagnostic(&self, message: &str, help: &str) -> bosun_model::playbook::Diagnostics {
        bosun_model::playbook::Diagnostics::new(
            self.source.clone(),
            vec![Diagnostic::new(self.span.clone(), message).with_help(help)],
        )
    }
}

/// Checks the top-level `region` (`eu-west-1`, `us-gov-west-1`, `cn-north-1`).
pub fn validate_region(r: Spanned<String>, diags: &mut Vec<Diagnostic>) -> Option<String> {
    let v = r.get_ref();
    let ok = !v.is_empty()
        && v.split('-').count() >= 3
        && v.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if ok {
        Some(v.clone())
    } else {
        diags.push(
            Diagnostic::new(
                r.span(),
                format!("`region` {v:?} is not an AWS region name"),
            )
            .with_help(
                "write a region such as \"eu-west-1\", or leave it out to use AWS_REGION or IMDS",
            ),
        );
        None
    }
}

/// Validated `[metrics]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Time between samples.
    pub interval: Duration,
    /// CloudWatch namespace.
    pub namespace: String,
    /// Extra dimensions on every point.
    pub dimensions: Vec<(String, String)>,
    /// Process names (argv\[0\] base name or comm) whose CPU and RSS are reported.
    pub processes: Vec<String>,
    /// Unsent points older than this are dropped.
    pub backlog: Duration,
    /// Overrides the instance id found by IMDS.
    pub instance_id: Option<String>,
}

/// What a `[[logs]]` source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// Plain text files.
    File,
    /// The systemd journal through `journalctl -o json`.
    Journald,
    /// Kubernetes CRI container logs (`timestamp stream P|F message`).
    Cri,
}

impl LogKind {
    /// The name used in config and checkpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::File => "file",
            LogKind::Journald => "journald",
            LogKind::Cri => "cri",
        }
    }
}

/// How event timestamps are read from the text.
#[derive(Debug, Clone, PartialEq)]
pub struct TimestampRule {
    /// Group 1 (or the whole match) is the timestamp.
    pub regex: Pattern,
    /// chrono format; without a zone in it the time is UTC.
    pub format: String,
}

/// Validated `[[logs]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSourceConfig {
    /// A stable name for checkpoints: `kind:path` (or `journald`).
    pub id: String,
    /// What it reads.
    pub kind: LogKind,
    /// Glob of files (file and cri).
    pub path: String,
    /// Destination group.
    pub log_group: String,
    /// Stream name template.
    pub log_stream: String,
    /// Start of a multi-line event.
    pub multiline_start: Option<Pattern>,
    /// Timestamp extraction.
    pub timestamp: Option<TimestampRule>,
    /// Keep only events matching one of these (all when empty).
    pub include: Vec<Pattern>,
    /// Drop events matching one of these.
    pub exclude: Vec<Pattern>,
    /// Retention given to a group bosund creates.
    pub retention_days: Option<u32>,
    /// Longest an event waits before its batch is sent.
    pub flush_interval: Duration,
    /// Overrides the instance id found by IMDS in stream names.
    pub instance_id: Option<String>,
}

fn duration(
    v: &Option<Spanned<String>>,
    key: &str,
    range: Range<Duration>,
    default: Duration,
    diags: &mut Vec<Diagnostic>,
) -> Duration {
    let Some(s) = v else { return default };
    match humantime::parse_duration(s.get_ref()) {
        Ok(d) if range.contains(&d) => d,
        Ok(_) => {
            diags.push(
                Diagnostic::new(s.span(), format!("`{key}` is out of range")).with_help(format!(
                    "use {} to {}",
                    humantime::format_duration(range.start),
                    humantime::format_duration(range.end - Duration::from_nanos(1))
                )),
            );
            default
        }
        Err(e) => {
            diags.push(
                Diagnostic::new(s.span(), format!("`{key}`: {e}"))
                    .with_help("write a duration such as \"10s\" or \"1m\""),
            );
            default
        }
    }
}

fn pattern(s: &Spanned<String>, key: &str, diags: &mut Vec<Diagnostic>) -> Option<Pattern> {
    match regex::Regex::new(s.get_ref()) {
        Ok(r) => Some(Pattern(r)),
        Err(e) => {
            let msg = e.to_string();
            let last = msg.lines().last().unwrap_or("invalid").trim().to_string();
            diags.push(
                Diagnostic::new(s.span(), format!("`{key}` is not a valid regular expression: {last}"))
                    .with_help("regex syntax: https://docs.rs/regex/latest/regex/#syntax (use single quotes in TOML to avoid escaping backslashes)"),
            );
            None
        }
    }
}

/// Validates `[metrics]`; problems go to `diags`.
pub fn validate_metrics(m: MetricsSection, diags: &mut Vec<Diagnostic>) -> MetricsConfig {
    let interval = duration(
        &m.interval,
        "interval",
        Duration::from_secs(1)..Duration::from_secs(301),
        DEFAULT_INTERVAL,
        diags,
    );
    let backlog = duration(
        &m.backlog,
        "backlog",
        Duration::from_secs(60)..Duration::from_secs(14 * 86400 + 1),
        DEFAULT_BACKLOG,
        diags,
    );
    let namespace = match &m.namespace {
        None => DEFAULT_NAMESPACE.to_string(),
        Some(n) => {
            if n.get_ref().is_empty() || n.get_ref().starts_with(':') || n.get_ref().len() > 255 {
                diags.push(
                    Diagnostic::new(
                        n.span(),
                        "`namespace` must be 1 to 255 characters, not starting with ':'",
                    )
                    .with_help("the stack's alarms and IAM policy expect \"Bosun/Host\""),
                );
            }
            n.get_ref().clone()
        }
    };
    if m.dimensions.len() > 20 {
        diags.push(Diagnostic::new(
            m.namespace.as_ref().map(|n| n.span()).unwrap_or(0..0),
            "at most 20 extra `dimensions` (CloudWatch allows 30 per metric, bosund uses up to 2)",
        ));
    }
    MetricsConfig {
        interval,
        namespace,
        dimensions: m.dimensions.into_iter().collect(),
        processes: m
            .processes
            .unwrap_or_else(|| DEFAULT_PROCESSES.iter().map(|s| s.to_string()).collect()),
        backlog,
        instance_id: m.instance_id,
    }
}

/// Validates one `[[logs]]` entry (`section` is its span); problems go to `diags`.
pub fn validate_log(
    section: Range<usize>,
    l: LogSection,
    diags: &mut Vec<Diagnostic>,
) -> Option<LogSourceConfig> {
    let before = diags.len();
    let kind = match l.kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("file") => LogKind::File,
        Some("journald") => LogKind::Journald,
        Some("cri") => LogKind::Cri,
        Some(other) => {
            diags.push(
                Diagnostic::new(
                    l.kind.as_ref().map(|k| k.span()).unwrap_or(section.clone()),
                    format!("unknown log `kind` \"{other}\""),
                )
                .with_help("use \"file\", \"journald\" or \"cri\""),
            );
            LogKind::File
        }
    };
    let path = match (kind, &l.path) {
        (LogKind::File, None) => {
            diags.push(
                Diagnostic::new(section.clone(), "a file log source needs `path`")
                    .with_help("e.g. path = \"/var/log/syslog\" or \"/var/log/app/*.log\""),
            );
            String::new()
        }
        (LogKind::Journald, Some(p)) => {
            diags.push(
                Diagnostic::new(p.span(), "a journald source has no `path`")
                    .with_help("remove it: journald is read through journalctl"),
            );
            String::new()
        }
        (LogKind::Journald, None) => String::new(),
        (LogKind::Cri, None) => DEFAULT_CRI_PATH.to_string(),
        (_, Some(p)) => {
            if !p.get_ref().starts_with('/') {
                diags.push(
                    Diagnostic::new(p.span(), "`path` must be absolute")
                        .with_help("bosund runs from /; write the full path"),
                );
            }
            p.get_ref().clone()
        }
    };
    let group = l.log_group.get_ref();
    if group.is_empty()
        || group.len() > 512
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c))
    {
        diags.push(
            Diagnostic::new(
                l.log_group.span(),
                "`log_group` is not a valid log group name",
            )
            .with_help("1 to 512 characters: letters, digits, '_', '-', '/', '.', '#'"),
        );
    }
    let log_stream = l
        .log_stream
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_else(|| DEFAULT_STREAM.to_string());
    if let Some(s) = &l.log_stream {
        let allowed: &[&str] = match kind {
            LogKind::File => &["instance_id", "hostname", "file"],
            LogKind::Journald => &["instance_id", "hostname"],
            LogKind::Cri => &[
                "instance_id",
                "hostname",
                "file",
                "namespace",
                "pod",
                "container",
            ],
        };
        for var in template_vars(s.get_ref()) {
            if !allowed.contains(&var.as_str()) {
                diags.push(
                    Diagnostic::new(s.span(), format!("unknown `{{{var}}}` in `log_stream`"))
                        .with_help(format!("available here: {}", allowed.join(", "))),
                );
            }
        }
        if s.get_ref().is_empty() {
            diags.push(Diagnostic::new(s.span(), "`log_stream` is empty"));
        }
    }
    let multiline_start = l
        .multiline_start
        .as_ref()
        .and_then(|s| pattern(s, "multiline_start", diags));
    let timestamp = match (&l.timestamp_regex, &l.timestamp_format) {
        (None, None) => None,
        (Some(r), Some(f)) => {
            let regex = pattern(r, "timestamp_regex", diags);
            if chrono::format::StrftimeItems::new(f.get_ref())
                .any(|i| matches!(i, chrono::format::Item::Error))
            {
                diags.push(
                    Diagnostic::new(
                        f.span(),
                        "`timestamp_format` is not a valid strftime format",
                    )
                    .with_help("e.g. \"%Y-%m-%dT%H:%M:%S%.f%z\" (chrono's strftime syntax)"),
                );
            }
            regex.map(|regex| TimestampRule {
                regex,
                format: f.get_ref().clone(),
            })
        }
        (Some(s), None) | (None, Some(s)) => {
            diags.push(
                Diagnostic::new(
                    s.span(),
                    "`timestamp_regex` and `timestamp_format` go together",
                )
                .with_help("set both, or neither to use the time the line was read"),
            );
            None
        }
    };
    let include = l
        .include
        .iter()
        .filter_map(|s| pattern(s, "include", diags))
        .collect();
    let exclude = l
        .exclude
        .iter()
        .filter_map(|s| pattern(s, "exclude", diags))
        .collect();
    let retention_days = l.retention_days.as_ref().map(|r| {
        if !RETENTION_DAYS.contains(r.get_ref()) {
            diags.push(
                Diagnostic::new(
                    r.span(),
                    format!("{} is not a retention CloudWatch Logs accepts", r.get_ref()),
                )
                .with_help(format!("use one of {RETENTION_DAYS:?}")),
            );
        }
        *r.get_ref()
    });
    let flush_interval = duration(
        &l.flush_interval,
        "flush_interval",
        Duration::from_millis(50)..Duration::from_secs(61),
        DEFAULT_FLUSH,
        diags,
    );
    if diags.len() > before {
        return None;
    }
    let id = match kind {
        LogKind::Journald => "journald".to_string(),
        _ => format!("{}:{}", kind.as_str(), path),
    };
    Some(LogSourceConfig {
        id,
        kind,
        path,
        log_group: group.clone(),
        log_stream,
        multiline_start,
        timestamp,
        include,
        exclude,
        retention_days,
        flush_interval,
        instance_id: l.instance_id,
    })
}

/// Checks across `[[logs]]` entries: two sources may not read the same thing.
pub fn validate_logs_together(
    sources: &[(Range<usize>, LogSourceConfig)],
    diags: &mut Vec<Diagnostic>,
) {
    for (i, (span, s)) in sources.iter().enumerate() {
        if sources[..i].iter().any(|(_, o)| o.id == s.id) {
            diags.push(
                Diagnostic::new(
                    span.clone(),
                    format!("a second [[logs]] source reads {}", s.id),
                )
                .with_help(
                    "each file or journald may be read by one source only (one checkpoint each)",
                ),
            );
        }
    }
}

/// The `{name}` variables of a template.
pub fn template_vars(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push(rest[start + 1..start + end].to_string());
        rest = &rest[start + end + 1..];
    }
    out
}

/// Fills a stream template; characters CloudWatch refuses in stream names (`:` and `*`) become
/// `_`, and the result is cut to 512 bytes.
pub fn render_stream(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    let mut s: String = s
        .chars()
        .map(|c| if c == ':' || c == '*' { '_' } else { c })
        .collect();
    while s.len() > 512 {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_templates_are_filled_and_sanitised() {
        assert_eq!(
            render_stream(
                "{instance_id}/{file}",
                &[("instance_id", "i-1"), ("file", "a:b*.log")]
            ),
            "i-1/a_b_.log"
        );
        assert_eq!(template_vars("x{a}y{b}"), vec!["a", "b"]);
    }
}
