//! The analyst's report after a `read`: who sent how much to whom outside, how the flows stood
//! against the policy, and what the rules raised. A readable table for standard error and a
//! JSON document for machines; both in a deterministic order.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::engine::PolicyCounts;
use crate::pipeline::ReadReport;

/// One inside host's top outside destinations.
#[derive(Debug, Clone)]
pub struct HostTalk {
    pub host: IpAddr,
    /// Bytes sent to all outside destinations.
    pub total_bytes: u64,
    /// (destination, bytes sent, flows), most bytes first.
    pub top: Vec<(IpAddr, u64, u64)>,
}

/// The report.
#[derive(Debug, Clone)]
pub struct Report {
    pub hosts: Vec<HostTalk>,
    pub policy: Option<PolicyCounts>,
    /// (rule, alerts, suppressed, matched).
    pub alerts: Vec<(String, u64, u64, u64)>,
}

impl Report {
    /// Builds it from a finished read; `top` destinations per host.
    pub fn build(r: &ReadReport, top: usize) -> Report {
        let mut hosts: Vec<HostTalk> = r
            .talkers
            .iter()
            .flatten()
            .map(|(host, peers)| {
                let mut list: Vec<(IpAddr, u64, u64)> =
                    peers.iter().map(|(p, t)| (*p, t.bytes, t.flows)).collect();
                list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let total_bytes = list.iter().map(|x| x.1).sum();
                list.truncate(top);
                HostTalk {
                    host: *host,
                    total_bytes,
                    top: list,
                }
            })
            .collect();
        hosts.sort_by(|a, b| b.total_bytes.cmp(&a.total_bytes).then(a.host.cmp(&b.host)));
        Report {
            hosts,
            policy: r.engine.policy.clone(),
            alerts: r
                .engine
                .rules
                .iter()
                .map(|(id, c)| (id.clone(), c.alerts, c.suppressed, c.matched))
                .collect(),
        }
    }

    /// The table for standard error.
    pub fn text(&self) -> String {
        let mut s = String::from("\n== exfilwatch report ==\n");
        let _ = writeln!(
            s,
            "\nBytes sent by inside hosts to outside destinations (IP layer):"
        );
        if self.hosts.is_empty() {
            let _ = writeln!(s, "  (none)");
        }
        for h in &self.hosts {
            let _ = writeln!(
                s,
                "  {:<40} {:>14} bytes total",
                h.host.to_string(),
                h.total_bytes
            );
            for (peer, bytes, flows) in &h.top {
                let _ = writeln!(
                    s,
                    "      -> {:<34} {:>14} bytes in {} flow(s)",
                    peer.to_string(),
                    bytes,
                    flows
                );
            }
        }
        if let Some(p) = &self.policy {
            let _ = writeln!(s, "\nFlows by policy verdict:");
            let _ = writeln!(s, "  allowed   {:>10}", p.allowed);
            let _ = writeln!(s, "  denied    {:>10}", p.denied);
            let _ = writeln!(s, "  unwatched {:>10}", p.unwatched);
        }
        let _ = writeln!(s, "\nAlerts by rule:");
        for (id, n, sup, _) in &self.alerts {
            let _ = writeln!(s, "  {id:<32} {n:>10} alerts {sup:>8} suppressed");
        }
        s
    }

    /// The JSON document.
    pub fn json(&self) -> String {
        let hosts: Vec<Value> = self
            .hosts
            .iter()
            .map(|h| {
                json!({
                    "host": h.host.to_string(),
                    "bytes": h.total_bytes,
                    "top_destinations": h.top.iter().map(|(p, b, f)| json!({
                        "dest_ip": p.to_string(), "bytes": b, "flows": f,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let policy = self
            .policy
            .as_ref()
            .map(|p| json!({"allowed": p.allowed, "denied": p.denied, "unwatched": p.unwatched}));
        let alerts: Vec<Value> = self
            .alerts
            .iter()
            .map(
                |(id, n, sup, m)| json!({"rule": id, "alerts": n, "suppressed": sup, "matched": m}),
            )
            .collect();
        let mut out = serde_json::to_string_pretty(&json!({
            "inside_hosts": hosts,
            "policy": policy,
            "alerts": alerts,
        }))
        .unwrap_or_default();
        out.push('\n');
        out
    }
}
