//! `exfilwatch firewall`: the policy rendered as default-deny host firewall rules, checked for
//! structure and validated by the real tools (`nft -c -f`, `iptables-restore --test`,
//! `ip6tables-restore --test`).
//!
//! Safety: the tools only ever run inside a network namespace each test creates
//! (`ip netns add exfw-fw-<pid>-<n>`) and deletes afterwards, and only in check mode, so nothing
//! on this machine's own firewall is touched even by accident. Validation needs root, iproute2,
//! nftables and iptables (Debian's packages `iproute2`, `nftables`, `iptables`; Debian's default
//! iptables is the nf_tables backend, which is what these tests run). Without them the
//! validation prints SKIPPED and passes, except under `CI=true`, where that is a failure.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use exfilwatch::firewall::{render, FirewallFormat};
use exfilwatch::rules::RuleSet;

const BIN: &str = env!("CARGO_BIN_EXE_exfilwatch");

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// The reference layout's policy (REFERENCE.md).
const REFERENCE: &str = r#"
[networks]
internal = ["10.0.0.0/8"]
admin = ["10.0.0.0/24"]
ai = ["10.0.1.0/24"]
data = ["10.0.2.0/24"]

[policy]
zones = ["ai", "data", "admin"]

[[policy.allow]]
from = "ai"
to = "data"
proto = "tcp"
dest_port = [5432, 6379]

[[policy.allow]]
from = "admin"
to = "ai"
proto = "tcp"
dest_port = 22
"#;

/// Dual stack, plus an IPv6-only zone.
const DUAL_STACK: &str = r#"
[networks]
admin = ["10.0.0.0/24", "fd00:0:0:a::/64"]
ai = ["10.0.1.0/24", "fd00:0:0:1::/64"]
data = ["10.0.2.0/24", "fd00:0:0:2::/64"]
backup = ["fd00:0:0:b::/64"]

[policy]
zones = ["ai", "data", "admin", "backup"]

[[policy.allow]]
from = "ai"
to = "data"
proto = "tcp"
dest_port = [5432, 6379]

[[policy.allow]]
from = "admin"
to = "ai"
proto = "tcp"
dest_port = 22

[[policy.allow]]
from = "ai"
to = "backup"
proto = "tcp"
dest_port = 873
"#;

/// `any`, `icmp`, port ranges, many ports, nested zones, an entry that matches nothing.
const MIXED: &str = r#"
[networks]
internal = ["10.0.0.0/8"]
admin = ["10.0.0.0/24"]
ai = ["10.0.1.0/24"]
data = ["10.0.2.0/24"]

[policy]
zones = ["internal", "ai", "data", "admin"]

[[policy.allow]]
from = "ai"
to = "data"
proto = "any"
dest_port = [53, "8000-8100"]

[[policy.allow]]
from = "admin"
to = "ai"
proto = "icmp"

[[policy.allow]]
from = "any"
to = "ai"
proto = "tcp"
dest_port = 11434

[[policy.allow]]
from = "ai"
to = "internal"
proto = "udp"
dest_port = 514

[[policy.allow]]
from = "ai"
to = "any"
proto = "icmp"

[[policy.allow]]
from = "ai"
to = "data"
proto = "icmp"
dest_port = 7

[[policy.allow]]
from = "ai"
to = "data"
proto = "tcp"
dest_port = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, "100-200", 29]

[[policy.allow]]
from = "data"
to = "admin"
proto = "any"
"#;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("exfw-fwtest"));
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn firewall(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("firewall")
        .args(args)
        .output()
        .expect("run exfilwatch")
}

/// `exfilwatch firewall --rules FILE --format FORMAT` (zone ai), which must succeed.
fn render_cli(rules: &Path, format: &str) -> String {
    let out = firewall(&["--rules", rules.to_str().unwrap(), "--format", format]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "firewall --format {format} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The library rendering (the CLI has no IPv6 iptables format of its own).
fn render_lib(rules: &Path, format: FirewallFormat) -> String {
    let set = RuleSet::load(&[rules.to_path_buf()]).expect("rules load");
    render(&set, "ai", format).expect("render")
}

/// Whether the real tools can validate here; prints why not (and fails under CI).
fn can_validate(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = ["ip", "nft", "iptables-restore", "ip6tables-restore"]
        .into_iter()
        .filter(|t| !common::have(t))
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = if root {
        format!("missing tools: {}", missing.join(", "))
    } else {
        "not root".to_string()
    };
    assert!(
        !common::ci(),
        "{test}: firewall validation must run in CI, but: {why}"
    );
    eprintln!("SKIPPED {test}: {why} (validation needs root, iproute2, nftables and iptables)");
    false
}

/// A fresh, empty network namespace, deleted on drop: the tools run only in there.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = unique("exfw-fw");
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("spawn ip");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }

    /// Runs `program args` inside the namespace; panics with its output unless it succeeds.
    fn check(&self, program: &str, args: &[&str], file: &Path, text: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .arg(file)
            .output()
            .expect("spawn ip netns exec");
        assert!(
            out.status.success(),
            "{program} {args:?} rejected the rendering:\n{}{}\n--- input ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            numbered(text)
        );
    }

    /// Validates one rendering with the tool of its format.
    fn validate(&self, dir: &TempDir, format: FirewallFormat, text: &str) {
        let (name, program, args): (&str, &str, &[&str]) = match format {
            FirewallFormat::Nftables => ("rules.nft", "nft", &["-c", "-f"]),
            FirewallFormat::Iptables => ("rules.ipt", "iptables-restore", &["--test"]),
            FirewallFormat::Ip6tables => ("rules.ip6t", "ip6tables-restore", &["--test"]),
        };
        let file = dir.write(name, text);
        self.check(program, args, &file, text);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn numbered(text: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| format!("{:4} {l}\n", i + 1))
        .collect()
}

/// Asserts `lines` occur in `text` as whole lines (trimmed), in this order.
fn assert_lines_in_order(text: &str, lines: &[&str]) {
    let have: Vec<&str> = text.lines().map(str::trim).collect();
    let mut from = 0;
    for want in lines {
        match have[from..].iter().position(|l| l == want) {
            Some(i) => from += i + 1,
            None => panic!(
                "line {want:?} missing (or out of order) in:\n{}",
                numbered(text)
            ),
        }
    }
}

fn rules_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Renders all three formats for `rules`, and validates them if the tools are here.
fn render_all(test: &str, dir: &TempDir, rules: &Path) -> (String, String, String) {
    let nft = render_cli(rules, "nftables");
    let ipt = render_cli(rules, "iptables");
    let ip6t = render_lib(rules, FirewallFormat::Ip6tables);
    assert_eq!(nft, render_lib(rules, FirewallFormat::Nftables));
    assert_eq!(ipt, render_lib(rules, FirewallFormat::Iptables));
    // Deterministic: the same input renders the same bytes.
    assert_eq!(nft, render_cli(rules, "nftables"));
    assert_eq!(ipt, render_cli(rules, "iptables"));
    if can_validate(test) {
        let ns = Netns::new();
        ns.validate(dir, FirewallFormat::Nftables, &nft);
        ns.validate(dir, FirewallFormat::Iptables, &ipt);
        ns.validate(dir, FirewallFormat::Ip6tables, &ip6t);
    }
    // The comments name the rules file as given: drop the temporary directory for the checks.
    let prefix = format!("{}/", dir.0.display());
    let strip = |s: String| s.replace(&prefix, "");
    (strip(nft), strip(ipt), strip(ip6t))
}

#[test]
fn reference_layout_renders_the_reference_rules() {
    let dir = TempDir::new();
    let rules = dir.write("reference.toml", REFERENCE);
    let (nft, ipt, ip6t) = render_all("reference_layout_renders_the_reference_rules", &dir, &rules);

    // nftables: one inet table that replaces itself, three drop chains.
    assert!(nft.starts_with("#!/usr/sbin/nft -f\n"), "{nft}");
    assert!(
        nft.contains("reference.toml"),
        "header names the rules file:\n{nft}"
    );
    assert!(
        nft.contains("zone `ai` (10.0.1.0/24)"),
        "header names the zone:\n{nft}"
    );
    assert_lines_in_order(
        &nft,
        &[
            "table inet exfilwatch",
            "delete table inet exfilwatch",
            "table inet exfilwatch {",
            "chain input {",
            "type filter hook input priority filter; policy drop;",
            "iif \"lo\" accept",
            "ct state established,related accept",
            "# allow admin -> ai proto tcp dest_port 22 (reference.toml:18)",
            "ip saddr 10.0.0.0/24 tcp dport 22 accept",
            "limit rate 5/minute log prefix \"IPT_INPUT_DROP: \"",
            "}",
            "chain forward {",
            "type filter hook forward priority filter; policy drop;",
            "}",
            "chain output {",
            "type filter hook output priority filter; policy drop;",
            "oif \"lo\" accept",
            "ct state established,related accept",
            "# allow ai -> data proto tcp dest_port 5432,6379 (reference.toml:12)",
            "ip daddr 10.0.2.0/24 tcp dport { 5432, 6379 } accept",
            "limit rate 5/minute log prefix \"IPT_OUTPUT_DROP: \"",
            "}",
            "}",
        ],
    );
    let accepts: Vec<&str> = rules_lines(&nft)
        .into_iter()
        .filter(|l| l.ends_with("accept") && !l.starts_with("icmpv6 type"))
        .collect();
    assert_eq!(
        accepts,
        [
            "iif \"lo\" accept",
            "ct state established,related accept",
            "ip saddr 10.0.0.0/24 tcp dport 22 accept",
            "oif \"lo\" accept",
            "ct state established,related accept",
            "ip daddr 10.0.2.0/24 tcp dport { 5432, 6379 } accept",
        ],
        "no accept beyond the reference's (and IPv6 neighbour discovery)"
    );
    assert!(nft.contains(
        "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept"
    ));

    // iptables: exactly the reference rules, in iptables-restore form.
    assert_eq!(
        rules_lines(&ipt),
        [
            "*filter",
            ":INPUT DROP [0:0]",
            ":FORWARD DROP [0:0]",
            ":OUTPUT DROP [0:0]",
            "-A INPUT -i lo -j ACCEPT",
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A INPUT -s 10.0.0.0/24 -p tcp -m tcp --dport 22 -j ACCEPT",
            "-A INPUT -m limit --limit 5/min -j LOG --log-prefix \"IPT_INPUT_DROP: \"",
            "-A OUTPUT -o lo -j ACCEPT",
            "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A OUTPUT -d 10.0.2.0/24 -p tcp -m multiport --dports 5432,6379 -j ACCEPT",
            "-A OUTPUT -m limit --limit 5/min -j LOG --log-prefix \"IPT_OUTPUT_DROP: \"",
            "COMMIT",
        ]
    );
    assert!(ipt.contains("# allow admin -> ai proto tcp dest_port 22 (reference.toml:18)"));
    assert!(
        ipt.contains("IPv6 is not filtered by this document"),
        "{ipt}"
    );

    // ip6tables: default deny with loopback, established and neighbour discovery only.
    let v6 = rules_lines(&ip6t);
    assert!(v6.contains(&"-A INPUT -i lo -j ACCEPT"));
    assert!(v6.contains(&"-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"));
    assert!(v6.contains(
        &"-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -m hl --hl-eq 255 -j ACCEPT"
    ));
    assert!(!v6.iter().any(|l| l.contains("dport")), "{ip6t}");
    assert!(ip6t.contains(
        "#   INPUT allow admin -> ai proto tcp dest_port 22 (reference.toml:18): 10.0.0.0/24"
    ));
}

#[test]
fn dual_stack_zones_render_ip_and_ip6_matches() {
    let dir = TempDir::new();
    let rules = dir.write("dual.toml", DUAL_STACK);
    let (nft, ipt, ip6t) = render_all("dual_stack_zones_render_ip_and_ip6_matches", &dir, &rules);

    assert!(
        nft.contains("zone `ai` (10.0.1.0/24, fd00:0:0:1::/64)"),
        "{nft}"
    );
    assert_lines_in_order(
        &nft,
        &[
            "chain input {",
            "ip saddr 10.0.0.0/24 tcp dport 22 accept",
            "ip6 saddr fd00:0:0:a::/64 tcp dport 22 accept",
            "limit rate 5/minute log prefix \"IPT_INPUT_DROP: \"",
            "chain output {",
            "ip daddr 10.0.2.0/24 tcp dport { 5432, 6379 } accept",
            "ip6 daddr fd00:0:0:2::/64 tcp dport { 5432, 6379 } accept",
            "# allow ai -> backup proto tcp dest_port 873 (dual.toml:24)",
            "ip6 daddr fd00:0:0:b::/64 tcp dport 873 accept",
            "limit rate 5/minute log prefix \"IPT_OUTPUT_DROP: \"",
        ],
    );

    // IPv4 document: no IPv6 address; the IPv6 networks it left out are named.
    assert!(
        !rules_lines(&ipt).iter().any(|l| l.contains("fd00")),
        "{ipt}"
    );
    assert!(ipt.contains(
        "#   OUTPUT allow ai -> backup proto tcp dest_port 873 (dual.toml:24): fd00:0:0:b::/64"
    ));
    assert!(ipt.contains("#   no IPv4 addresses: nothing to accept in this document"));

    // IPv6 document: the same entries with the IPv6 networks.
    let v6 = rules_lines(&ip6t);
    for want in [
        "-A INPUT -s fd00:0:0:a::/64 -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A OUTPUT -d fd00:0:0:2::/64 -p tcp -m multiport --dports 5432,6379 -j ACCEPT",
        "-A OUTPUT -d fd00:0:0:b::/64 -p tcp -m tcp --dport 873 -j ACCEPT",
        "-A INPUT -m limit --limit 5/min -j LOG --log-prefix \"IPT_INPUT_DROP: \"",
        "-A OUTPUT -m limit --limit 5/min -j LOG --log-prefix \"IPT_OUTPUT_DROP: \"",
    ] {
        assert!(v6.contains(&want), "{want:?} missing in:\n{ip6t}");
    }
    assert!(!v6.iter().any(|l| l.contains("10.0.")), "{ip6t}");
}

#[test]
fn any_icmp_port_ranges_and_nested_zones() {
    let dir = TempDir::new();
    let rules = dir.write("mixed.toml", MIXED);
    let (nft, ipt, ip6t) = render_all("any_icmp_port_ranges_and_nested_zones", &dir, &rules);
    let nft_rules = rules_lines(&nft);
    let ipt_rules = rules_lines(&ipt);

    // proto any with ports: TCP and UDP.
    for want in [
        "ip daddr 10.0.2.0/24 tcp dport { 53, 8000-8100 } accept",
        "ip daddr 10.0.2.0/24 udp dport { 53, 8000-8100 } accept",
    ] {
        assert!(nft_rules.contains(&want), "{want:?} missing in:\n{nft}");
    }
    for want in [
        "-A OUTPUT -d 10.0.2.0/24 -p tcp -m multiport --dports 53,8000:8100 -j ACCEPT",
        "-A OUTPUT -d 10.0.2.0/24 -p udp -m multiport --dports 53,8000:8100 -j ACCEPT",
    ] {
        assert!(ipt_rules.contains(&want), "{want:?} missing in:\n{ipt}");
    }

    // ICMP from a zone, and to any address (ICMP and ICMPv6).
    assert!(nft_rules.contains(&"ip saddr 10.0.0.0/24 meta l4proto icmp accept"));
    assert!(nft_rules.contains(&"meta l4proto { icmp, ipv6-icmp } accept"));
    assert!(ipt_rules.contains(&"-A INPUT -s 10.0.0.0/24 -p icmp -j ACCEPT"));
    assert!(ipt_rules.contains(&"-A OUTPUT -p icmp -j ACCEPT"));
    assert!(rules_lines(&ip6t).contains(&"-A OUTPUT -p ipv6-icmp -j ACCEPT"));

    // From any: no address match, in both families.
    assert!(nft_rules.contains(&"tcp dport 11434 accept"));
    assert!(ipt_rules.contains(&"-A INPUT -p tcp -m tcp --dport 11434 -j ACCEPT"));
    assert!(rules_lines(&ip6t).contains(&"-A INPUT -p tcp -m tcp --dport 11434 -j ACCEPT"));

    // ICMP with ports matches nothing: a comment, no rule.
    assert!(nft.contains("#   ICMP has no ports: this entry matches no packet"));
    assert!(!nft_rules.iter().any(|l| l.contains("dport 7 ")), "{nft}");

    // A nested zone is its network minus the more specific zones (admin, ai, data).
    let internal = "ip daddr { 10.0.3.0/24, 10.0.4.0/22, 10.0.8.0/21, 10.0.16.0/20, \
        10.0.32.0/19, 10.0.64.0/18, 10.0.128.0/17, 10.1.0.0/16, 10.2.0.0/15, 10.4.0.0/14, \
        10.8.0.0/13, 10.16.0.0/12, 10.32.0.0/11, 10.64.0.0/10, 10.128.0.0/9 } udp dport 514 accept";
    assert!(nft_rules.contains(&internal), "{nft}");
    assert!(ipt_rules.contains(&"-A OUTPUT -d 10.0.3.0/24 -p udp -m udp --dport 514 -j ACCEPT"));
    assert!(ipt_rules.contains(&"-A OUTPUT -d 10.128.0.0/9 -p udp -m udp --dport 514 -j ACCEPT"));
    assert!(!ipt_rules.iter().any(|l| l.contains("10.0.0.0/8")), "{ipt}");

    // More than 15 multiport slots (a range takes two): split.
    for want in [
        "-A OUTPUT -d 10.0.2.0/24 -p tcp -m multiport --dports 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29 -j ACCEPT",
        "-A OUTPUT -d 10.0.2.0/24 -p tcp -m multiport --dports 100:200 -j ACCEPT",
    ] {
        assert!(ipt_rules.contains(&want), "{want:?} missing in:\n{ipt}");
    }

    // An entry neither from nor to ai renders nothing for ai.
    assert!(!nft.contains("allow data -> admin"), "{nft}");
}

#[test]
fn other_zones_render_their_own_view() {
    let dir = TempDir::new();
    let rules = dir.write("reference.toml", REFERENCE);
    let r = rules.to_str().unwrap();
    let out = firewall(&["--rules", r, "--zone", "data"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(rules_lines(&text).contains(&"ip saddr 10.0.1.0/24 tcp dport { 5432, 6379 } accept"));
    assert!(!text.contains("dport 22"), "{text}");
}

#[test]
fn no_policy_is_an_error() {
    let dir = TempDir::new();
    let rules = dir.write("nopolicy.toml", "[networks]\nai = [\"10.0.1.0/24\"]\n");
    for format in ["nftables", "iptables"] {
        let out = firewall(&["--rules", rules.to_str().unwrap(), "--format", format]);
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no [policy]"), "unclear message: {err}");
    }
}

#[test]
fn unknown_zone_is_an_error() {
    let dir = TempDir::new();
    let rules = dir.write("reference.toml", REFERENCE);
    // `internal` is a network but not a policy zone; `nosuch` is neither.
    for zone in ["nosuch", "internal"] {
        let out = firewall(&["--rules", rules.to_str().unwrap(), "--zone", zone]);
        assert_eq!(out.status.code(), Some(2), "zone {zone}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("`{zone}` is not a policy zone")),
            "unclear message: {err}"
        );
    }
}
