//! Rule compilation: what compiles, and every mistake with its line and column.

use super::*;

fn compile(text: &str) -> Result<RuleSet, RuleError> {
    compile_files(&[("t.toml".to_string(), text.to_string())])
}

fn err(text: &str) -> RuleError {
    compile(text).expect_err("should not compile")
}

const BASE: &str = r#"
[networks]
internal = ["10.0.0.0/8"]
ai = ["10.0.1.0/24", "fd00:ai::/64"]

[ports]
ai = [11434, 8000, "30000-30002"]
"#;

#[test]
fn test_embedded_defaults_compile() {
    let rs = RuleSet::embedded().unwrap();
    let ids: Vec<&str> = rs.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ai-port-syn",
            "ai-egress",
            "ai-egress-volume",
            "ai-long-egress"
        ]
    );
    assert_eq!(rs.rules[2].volume.map(|v| v.bytes), Some(10 << 20));
    assert_eq!(rs.rules[3].duration, Some(Duration::from_secs(1800)));
    assert!(rs.policy.is_none(), "the policy ships commented out");
    let ai = &rs.ports["ai"];
    for p in [11434, 8000, 8080, 1234, 7860, 30000] {
        assert!(ai.contains(p), "default ai ports hold {p}");
    }
    assert!(!ai.contains(443));
    let egress = &rs.rules[1];
    assert_eq!(egress.severity, Severity::High);
    assert!(egress.message.contains("possible exfiltration"));
    assert!(egress
        .src
        .as_ref()
        .unwrap()
        .contains("10.0.1.9".parse().unwrap()));
    assert!(egress
        .dest_not
        .as_ref()
        .unwrap()
        .contains("10.200.0.1".parse().unwrap()));
    assert_eq!(rs.rules[0].severity, Severity::Medium);
    assert_eq!(
        rs.networks["admin"].networks()[0].to_string(),
        "10.0.0.0/24"
    );
    assert_eq!(rs.networks["data"].networks()[0].to_string(), "10.0.2.0/24");
}

#[test]
fn test_schema_example_compiles() {
    let text = format!(
        "{BASE}{}",
        r#"
[[rule]]
id = "ai-port-syn"
kind = "new-connection"
dest_port = "ai"
src = "internal"
severity = "medium"
message = "New connection to an AI service port"
limit = { count = 5, per = "1m", track = "by_src" }
"#
    );
    let rs = compile(&text.replace("fd00:ai::/64", "fd00::/64")).unwrap();
    let r = &rs.rules[0];
    assert_eq!(r.kind, RuleKind::NewConnection);
    assert_eq!(
        r.limit,
        Some(Limit {
            count: 5,
            per: Duration::from_secs(60),
            track: Track::BySrc
        })
    );
    let ports = r.dest_port.as_ref().unwrap();
    assert_eq!(
        ports.ranges(),
        &[(8000, 8000), (11434, 11434), (30000, 30002)]
    );
    assert!(ports.contains(30001) && !ports.contains(30003) && !ports.contains(7999));
}

#[test]
fn test_bad_cidr_located() {
    let e = err(BASE);
    assert_eq!((e.line, e.column), (4, 6), "{e}");
    assert!(e.message.contains("bad CIDR \"fd00:ai::/64\""), "{e}");
    assert_eq!(e.file, "t.toml");
}

#[test]
fn test_host_bits_set_is_an_error() {
    let e = err("[networks]\nai = \"10.0.1.5/24\"\n");
    assert_eq!((e.line, e.column), (2, 6));
    assert!(e.message.contains("did you mean \"10.0.1.0/24\""), "{e}");
}

#[test]
fn test_unknown_field_located() {
    let e = err("[[rule]]\nid = \"x\"\nkind = \"egress\"\ndst_not = \"internal\"\n");
    assert_eq!(e.line, 4, "{e}");
    assert_eq!(e.column, 1, "{e}");
    assert!(e.message.contains("unknown field `dst_not`"), "{e}");
}

#[test]
fn test_unknown_network_name() {
    let e = err("[[rule]]\nid = \"x\"\nkind = \"egress\"\nsrc = \"aii\"\n");
    assert_eq!((e.line, e.column), (4, 7), "{e}");
    assert!(e.message.contains("unknown network `aii`"), "{e}");
}

#[test]
fn test_unknown_port_name() {
    let e = err("[[rule]]\nid = \"x\"\nkind = \"new-connection\"\ndest_port = \"llm\"\n");
    assert_eq!((e.line, e.column), (4, 13), "{e}");
    assert!(e.message.contains("unknown port set `llm`"), "{e}");
}

#[test]
fn test_duplicate_rule_id() {
    let e =
        err("[[rule]]\nid = \"a\"\nkind = \"egress\"\n\n[[rule]]\nid = \"a\"\nkind = \"egress\"\n");
    assert_eq!((e.line, e.column), (6, 6), "{e}");
    assert!(
        e.message
            .contains("duplicate rule id `a` (first defined at t.toml:2)"),
        "{e}"
    );
}

/// `policy` names the [policy] section's alerts; a rule of that id would share their
/// counters and (before) their JSON piece.
#[test]
fn test_policy_is_a_reserved_rule_id() {
    let e = err("\n[[rule]]\nid = \"policy\"\nkind = \"egress\"\n");
    assert_eq!((e.line, e.column), (3, 6), "{e}");
    assert!(e.message.contains("rule id `policy` is reserved"), "{e}");
}

#[test]
fn test_duplicate_id_across_files() {
    let a = (
        "a.toml".to_string(),
        "[[rule]]\nid = \"x\"\nkind = \"egress\"\n".to_string(),
    );
    let b = (
        "b.toml".to_string(),
        "\n[[rule]]\nid = \"x\"\nkind = \"egress\"\n".to_string(),
    );
    let e = compile_files(&[a, b]).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("b.toml", 3));
    assert!(e.message.contains("a.toml:2"), "{e}");
}

#[test]
fn test_bad_range() {
    let e = err("[ports]\nx = [\"9000-8000\"]\n");
    assert_eq!((e.line, e.column), (2, 5));
    assert!(e.message.contains("9000 is above 8000"), "{e}");
    let e = err("[ports]\nx = [70000]\n");
    assert!(e.message.contains("70000 is out of range"), "{e}");
    let e = err("[ports]\nx = [\"80-\"]\n");
    assert!(e.message.contains("bad port range"), "{e}");
}

#[test]
fn test_bad_duration() {
    let e = err(
        "[[rule]]\nid = \"x\"\nkind = \"egress\"\nlimit = { count = 1, per = \"5 minutes\" }\n",
    );
    assert_eq!(e.line, 4, "{e}");
    assert_eq!(e.column, 28, "{e}");
    assert!(e.message.contains("bad duration"), "{e}");
    let e = err("[flow]\nudp = \"0s\"\n");
    assert_eq!((e.line, e.column), (2, 7));
}

#[test]
fn test_bad_rule_id_and_kind_and_severity() {
    let e = err("[[rule]]\nid = \"Bad_Id\"\nkind = \"egress\"\n");
    assert_eq!((e.line, e.column), (2, 6));
    let e = err("[[rule]]\nid = \"x\"\nkind = \"exfil\"\n");
    assert_eq!((e.line, e.column), (3, 8));
    assert!(e.message.contains("unknown rule kind `exfil`"));
    let e = err("[[rule]]\nid = \"x\"\nkind = \"egress\"\nseverity = \"urgent\"\n");
    assert_eq!((e.line, e.column), (4, 12));
}

#[test]
fn test_missing_required_field() {
    let e = err("[[rule]]\nkind = \"egress\"\n");
    assert!(e.message.contains("missing field `id`"), "{e}");
    assert_eq!(e.line, 1);
}

#[test]
fn test_toml_syntax_error_located() {
    let e = err("[networks]\nai = [\"10.0.1.0/24\"\n");
    assert_eq!(e.file, "t.toml");
    assert!(e.line >= 2, "{e}");
}

#[test]
fn test_column_counts_characters_not_bytes() {
    let e = err("[[rule]]\nid = \"x\"\nmessage = \"é\"; kind = 1\n");
    assert_eq!(e.line, 3);
    let e = err("# é é é\n[[rule]]\nid = \"x\"\nkind = \"égress\"\n");
    assert_eq!((e.line, e.column), (4, 8));
}

#[test]
fn test_flow_table_settings() {
    let rs = compile("[flow]\ntcp_new = \"30s\"\nudp = 120\nmax_flows = 1000\n").unwrap();
    assert_eq!(rs.flow.tcp_new, Duration::from_secs(30));
    assert_eq!(rs.flow.udp, Duration::from_secs(120));
    assert_eq!(rs.flow.max_flows, 1000);
    assert_eq!(rs.flow.tcp_established, Duration::from_secs(600));
    let e = err("[flow]\nmax_flows = 0\n");
    assert_eq!((e.line, e.column), (2, 13));
    let e = err("[flow]\nmax_flows = 99999999999999999999\n");
    assert_eq!(e.line, 2);
}

#[test]
fn test_lists_and_literals_in_rules() {
    let rs = compile(
        "[networks]\nai = [\"10.0.1.0/24\"]\n[[rule]]\nid = \"x\"\nkind = \"egress\"\nsrc = [\"ai\", \"192.168.0.0/16\", \"2001:db8::1\"]\ndest_port = [443, \"8000-8010\"]\nproto = \"tcp\"\n",
    )
    .unwrap();
    let r = &rs.rules[0];
    let src = r.src.as_ref().unwrap();
    assert!(src.contains("10.0.1.3".parse().unwrap()));
    assert!(src.contains("192.168.7.7".parse().unwrap()));
    assert!(src.contains("2001:db8::1".parse().unwrap()));
    assert!(!src.contains("2001:db8::2".parse().unwrap()));
    assert!(r.matches_tuple(
        6,
        "10.0.1.3".parse().unwrap(),
        "1.1.1.1".parse().unwrap(),
        Some(8005)
    ));
    assert!(!r.matches_tuple(
        17,
        "10.0.1.3".parse().unwrap(),
        "1.1.1.1".parse().unwrap(),
        Some(8005)
    ));
    assert!(!r.matches_tuple(
        6,
        "10.0.1.3".parse().unwrap(),
        "1.1.1.1".parse().unwrap(),
        None
    ));
}

#[test]
fn test_new_connection_rejects_udp_proto() {
    let e = err("[[rule]]\nid = \"x\"\nkind = \"new-connection\"\nproto = \"udp\"\n");
    assert_eq!((e.line, e.column), (4, 9));
}

#[test]
fn test_overlapping_port_ranges_merge() {
    let rs = compile("[ports]\nx = [\"10-20\", \"15-30\", 31, 5]\n").unwrap();
    assert_eq!(rs.ports["x"].ranges(), &[(5, 5), (10, 31)]);
}

#[test]
fn test_huge_numbers_do_not_panic() {
    for text in [
        "[[rule]]\nid = \"x\"\nkind = \"egress\"\nlimit = { count = 9223372036854775807, per = \"9223372036854775807d\" }\n",
        "[[rule]]\nid = \"x\"\nkind = \"egress\"\nlimit = { count = -1, per = \"1s\" }\n",
        "[flow]\nudp = -5\n",
        "[ports]\nx = -1\n",
        "[ports]\nx = 1.5\n",
    ] {
        let _ = compile(text);
    }
}

/// `NetSet::contains` (masks compiled once) answers as `IpNetwork::contains` does, on
/// addresses near and inside every network and on random ones, for prefixes 0 to 32 and 0 to
/// 128, with IPv4 sets asked about IPv6 addresses and the other way round.
#[test]
fn test_netset_contains_equals_ipnetwork() {
    let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
    // An address of the family of `v6` from the low bits of `a`.
    let addr = |v6: bool, a: u128| -> IpAddr {
        if v6 {
            IpAddr::V6(a.into())
        } else {
            IpAddr::V4((a as u32).into())
        }
    };
    let bits = |v6: bool| if v6 { 128 } else { 32 };
    for round in 0..200 {
        let mut nets = Vec::new();
        for _ in 0..1 + round % 4 {
            let r = next();
            let v6 = r & 1 == 1;
            let prefix = (r >> 8) as u8 % (bits(v6) + 1);
            let a = addr(v6, (u128::from(next()) << 64) | u128::from(next()));
            nets.push(IpNetwork::new(a, prefix).unwrap());
        }
        let set = NetSet::new(nets.clone(), String::new());
        let mut probes: Vec<IpAddr> = Vec::new();
        for n in &nets {
            // The network's first address, a random address inside, and its neighbours
            // (one below, one past the end), in the width of its family.
            let v6 = n.is_ipv6();
            let width = u128::MAX >> (128 - bits(v6));
            let span = width.checked_shr(u32::from(n.prefix())).unwrap_or(0);
            let base = match n.network() {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let inside = base | (((u128::from(next()) << 64) | u128::from(next())) & span);
            for a in [
                base,
                inside,
                base.wrapping_sub(1),
                base.wrapping_add(span).wrapping_add(1),
            ] {
                probes.push(addr(v6, a & width));
            }
        }
        probes.push(addr(false, u128::from(next())));
        probes.push(addr(true, (u128::from(next()) << 64) | u128::from(next())));
        for ip in probes {
            let want = nets.iter().any(|n| n.contains(ip));
            assert_eq!(set.contains(ip), want, "{ip} in {nets:?}");
        }
    }
}
