//! What INFO `# Webhooks` and `/metrics` show of the endpoints: a copy of each
//! endpoint's figures the reactor refreshes after the ticks that change them.

use std::fmt::Write;

/// One endpoint's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Its id.
    pub id: i64,
    /// False once disabled.
    pub enabled: bool,
    /// Events delivered.
    pub delivered: i64,
    /// Attempts that failed.
    pub failed: i64,
    /// An event waits for its next attempt.
    pub retrying: bool,
    /// The last seq done.
    pub position: i64,
    /// Dead letters requeued and not yet delivered.
    pub requeued: i64,
    /// The last answer's HTTP status (0: none, or a transport failure).
    pub last_status: i64,
    /// Dead letters not requeued.
    pub dead_letters: i64,
}

impl Status {
    /// Events committed after its position (`last_seq`: the log's last), plus the
    /// requeued dead letters: what it still has to deliver, filter aside.
    pub fn lag(&self, last_seq: i64) -> i64 {
        (last_seq - self.position).max(0) + self.requeued
    }
}

/// INFO's `# Webhooks` section.
pub fn write_info(all: &[Status], last_seq: i64, t: &mut String) {
    let sum = |f: fn(&Status) -> i64| all.iter().map(f).sum::<i64>();
    let _ = write!(
        t,
        "# Webhooks\r\nwebhooks:{}\r\nwebhooks_enabled:{}\r\nwebhook_deliveries:{}\r\n\
         webhook_failures:{}\r\nwebhook_dead_letters:{}\r\n",
        all.len(),
        all.iter().filter(|s| s.enabled).count(),
        sum(|s| s.delivered),
        sum(|s| s.failed),
        sum(|s| s.dead_letters),
    );
    for s in all {
        let _ = write!(
            t,
            "webhook{}:state={},delivered={},failed={},retrying={},lag={},last_status={}\r\n",
            s.id,
            if s.enabled { "enabled" } else { "disabled" },
            s.delivered,
            s.failed,
            u8::from(s.retrying),
            s.lag(last_seq),
            s.last_status,
        );
    }
}

/// A per-endpoint metric: name, type, help, and its value given the log's last
/// seq.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Status, i64) -> i64,
);

/// The `userbus_webhook*` metrics.
pub fn write_metrics(all: &[Status], last_seq: i64, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP userbus_webhooks Webhook endpoints.\n# TYPE userbus_webhooks gauge\n\
         userbus_webhooks {}",
        all.len()
    );
    let families: [Family; 6] = [
        (
            "delivered_total",
            "counter",
            "Events a webhook endpoint accepted (2xx).",
            |s, _| s.delivered,
        ),
        (
            "failed_total",
            "counter",
            "Delivery attempts to a webhook endpoint that failed.",
            |s, _| s.failed,
        ),
        (
            "retrying",
            "gauge",
            "1 while an event waits for its next attempt.",
            |s, _| i64::from(s.retrying),
        ),
        (
            "lag",
            "gauge",
            "Committed events a webhook endpoint has not been given yet.",
            |s, last| s.lag(last),
        ),
        (
            "last_status",
            "gauge",
            "The HTTP status of the endpoint's last answer (0: none or no answer).",
            |s, _| s.last_status,
        ),
        (
            "dead_letters",
            "gauge",
            "Events that ran out of attempts at a webhook endpoint.",
            |s, _| s.dead_letters,
        ),
    ];
    for (name, kind, help, f) in families {
        let _ = writeln!(
            out,
            "# HELP userbus_webhook_{name} {help}\n# TYPE userbus_webhook_{name} {kind}"
        );
        for s in all {
            let _ = writeln!(
                out,
                "userbus_webhook_{name}{{webhook=\"{}\"}} {}",
                s.id,
                f(s, last_seq)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_metrics_name_each_endpoint() {
        let all = [Status {
            id: 3,
            enabled: true,
            delivered: 5,
            failed: 2,
            retrying: true,
            position: 8,
            requeued: 1,
            last_status: 500,
            dead_letters: 1,
        }];
        let mut t = String::new();
        write_info(&all, 10, &mut t);
        assert!(t.contains("webhooks:1\r\nwebhooks_enabled:1\r\nwebhook_deliveries:5\r\n"));
        assert!(t.contains(
            "webhook3:state=enabled,delivered=5,failed=2,retrying=1,lag=3,last_status=500\r\n"
        ));
        let mut m = String::new();
        write_metrics(&all, 10, &mut m);
        assert!(m.contains("userbus_webhooks 1\n"));
        assert!(m.contains("userbus_webhook_delivered_total{webhook=\"3\"} 5\n"));
        assert!(m.contains("userbus_webhook_lag{webhook=\"3\"} 3\n"));
    }
}
