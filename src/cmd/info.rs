//! INFO: the server's state, in Redis's `field:value` sections.
//!
//! # Format
//! `INFO [section ...]` → text; sections `server`, `clients`, `stats`,
//! `persistence`, `events` (the log, consumer groups with lag and pending counts,
//! durable handlers with their lag), `nats` (the JetStream relay: server, stream,
//! confirmed seq, lag in events and seconds, reconnects, last error; with
//! `--durability replicated`, the writes held for its acks),
//! `replication` (`role:master` or `role:slave`, and the follower's applied seq,
//! the stream's last seq, lag, promotions and fencing), `keyspace`,
//! `backup` (the BACKUP under way and how the last one ended), `webhooks` (the
//! endpoints: counts, totals, and per endpoint its state and figures)
//! (`default`, `all` and `everything` give all of them).

use std::fmt::Write;

use super::{Ctx, Outcome, Spec};
use crate::nats::offsets::WriterStatus;
use crate::protocol::Args;
use crate::store::StorageErrorKind;

pub const SPEC: Spec = Spec {
    name: "info",
    arity: -1,
    flags: &["loading", "stale"],
    summary: "Describes the server's state.",
    run,
};

const SECTIONS: [&str; 10] = [
    "server",
    "replication",
    "clients",
    "persistence",
    "stats",
    "events",
    "nats",
    "keyspace",
    "backup",
    "webhooks",
];

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let wanted: Vec<String> = args
        .iter_from(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "default" || w == "everything");
    let mut text = String::new();
    for section in SECTIONS {
        if all || wanted.iter().any(|w| w == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            render(section, ctx, &mut text);
        }
    }
    ctx.out.verbatim(&text);
    Outcome::Continue
}

fn render(section: &str, ctx: &mut Ctx<'_>, t: &mut String) {
    if section == "events" {
        render_events(ctx, t);
        return;
    }
    if section == "replication" {
        ctx.stats.replica.write_info(t);
        return;
    }
    if section == "nats" {
        render_nats(ctx, t);
        return;
    }
    if section == "webhooks" {
        let last = ctx.store_view().committed_counts().last_seq;
        crate::webhook::status::write_info(&ctx.stats.webhooks, last, t);
        return;
    }
    if section == "backup" {
        ctx.backups.render(ctx.config.backup_dir.as_deref(), t);
        return;
    }
    let s = &*ctx.stats;
    let uptime = s.started.elapsed().as_secs();
    // `write!` into a String cannot fail. `redis_version` is there because client
    // libraries gate features on it; userbus speaks the 7.0 protocol.
    let _ = match section {
        "server" => write!(
            t,
            "# Server\r\nuserbus_version:{}\r\n\
             redis_version:7.0.0\r\n\
             redis_mode:standalone\r\nos:{}\r\narch_bits:{}\r\nmultiplexing_api:epoll\r\n\
             process_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            s.tcp_port,
            uptime / 86_400,
        ),
        "clients" => write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\npubsub_clients:{}\r\n",
            s.connected_clients,
            ctx.config.maxclients,
            ctx.pubsub.connection_count()
        ),
        "persistence" => write!(
            t,
            "# Persistence\r\n{}db:{}\r\ndurability:{}\r\nstorage_ok:{}\r\n\
             storage_last_error:{}\r\ncommits:{}\r\nfailed_commits:{}\r\naof_enabled:1\r\n",
            loading_lines(ctx),
            ctx.config.db.display(),
            ctx.config.durability,
            u8::from(ctx.store_view().healthy()),
            ctx.store_view()
                .last_error()
                .map_or("none", StorageErrorKind::as_str),
            s.commits,
            s.failed_commits,
        )
        .and_then(|()| render_checkpointer(ctx, t))
        .and_then(|()| render_index_image(ctx, t)),
        "stats" => write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nunknown_commands:{}\r\nprotocol_errors:{}\r\n\
             cross_protocol_attempts:{}\r\nauth_failures:{}\r\nquery_buffer_closes:{}\r\n\
             idle_closes:{}\r\n\
             registrations:{}\r\nunregistrations:{}\r\nevents:{}\r\nhandler_panics:{}\r\n\
             pubsub_channels:{}\r\npubsub_patterns:{}\r\npubsub_pushes:{}\r\n\
             sse_frames:{}\r\nslow_subscriber_disconnects:{}\r\n\
             total_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n",
            s.connections_received,
            s.commands,
            s.rejected_connections,
            s.unknown_commands,
            s.protocol_errors,
            s.cross_protocol_attempts,
            s.auth_failures,
            s.query_buffer_closes,
            s.idle_closes,
            s.registrations,
            s.unregistrations,
            s.events,
            s.handler_panics,
            ctx.pubsub.channel_count(),
            ctx.pubsub.pattern_count(),
            s.pushes,
            s.sse_frames,
            s.slow_subscriber_disconnects,
            s.net_input_bytes,
            s.net_output_bytes,
        ),
        "keyspace" => {
            let n = ctx.store_view().user_count();
            write!(
                t,
                "# Keyspace\r\nusers:{n}\r\ndb0:keys={n},expires=0,avg_ttl=0\r\n"
            )
        }
        _ => Ok(()),
    };
}

/// `loading:0`, or while the user index loads (`store::users::load`) Redis's
/// `loading:1` and its progress fields.
fn loading_lines(ctx: &Ctx<'_>) -> String {
    match ctx.store_view().loading() {
        None => "loading:0\r\n".to_string(),
        Some(p) => {
            let secs = p.elapsed.as_secs_f64();
            let eta = if p.percent > 0.0 {
                secs * (100.0 - p.percent) / p.percent
            } else {
                0.0
            };
            format!(
                "loading:1\r\nasync_loading:0\r\nloading_start_time:{}\r\n\
                 loading_loaded_perc:{:.2}\r\nloading_eta_seconds:{}\r\n",
                p.started_ms / 1000,
                p.percent,
                eta.round() as u64
            )
        }
    }
}

/// The checkpointer's lines in `# Persistence` (none when it never started, as
/// in a store used alone).
fn render_checkpointer(ctx: &Ctx<'_>, t: &mut String) -> std::fmt::Result {
    let Some(c) = ctx.store_view().checkpoint_stats() else {
        return Ok(());
    };
    let ms = |micros: u64| micros as f64 / 1000.0;
    write!(
        t,
        "checkpointer:{}\r\ncheckpoints:{}\r\ncheckpoint_pages:{}\r\n\
         checkpoint_last_ms:{:.3}\r\ncheckpoint_max_ms:{:.3}\r\ncheckpoint_failures:{}\r\n\
         checkpoint_last_error:{}\r\nwal_bytes:{}\r\nwal_bytes_max:{}\r\n\
         wal_finishes:{}\r\nwal_finish_last_ms:{:.3}\r\nwal_finish_max_ms:{:.3}\r\n",
        if c.running { "running" } else { "stopped" },
        c.checkpoints,
        c.pages,
        ms(c.last_micros),
        ms(c.max_micros),
        c.failures,
        c.last_error.map_or("none", StorageErrorKind::as_str),
        c.wal_bytes,
        c.wal_bytes_max,
        c.finishes,
        ms(c.finish_last_micros),
        ms(c.finish_max_micros),
    )
}

/// The imager's lines in `# Persistence` (none when it never started).
fn render_index_image(ctx: &Ctx<'_>, t: &mut String) -> std::fmt::Result {
    let Some(i) = ctx.store_view().image_stats() else {
        return Ok(());
    };
    write!(
        t,
        "index_image:{}\r\nindex_images:{}\r\nindex_image_last_seq:{}\r\n\
         index_image_last_users:{}\r\nindex_image_last_time:{}\r\n\
         index_image_last_ms:{:.3}\r\nindex_image_failures:{}\r\n\
         index_image_dropped:{}\r\nindex_image_last_error:{}\r\n",
        if i.running { "running" } else { "stopped" },
        i.images,
        i.last_seq,
        i.last_users,
        i.last_at_ms / 1000,
        i.last_micros as f64 / 1000.0,
        i.failures,
        i.dropped,
        // One line: INFO fields end at CRLF.
        i.last_error
            .as_deref()
            .unwrap_or("none")
            .replace(['\r', '\n'], " "),
    )
}

/// The `# Nats` section: the JetStream relay (`nats_enabled:0` without `--nats`).
fn render_nats(ctx: &mut Ctx<'_>, t: &mut String) {
    let Some(n) = &ctx.stats.nats else {
        let _ = write!(t, "# Nats\r\nnats_enabled:0\r\n");
        return;
    };
    let lag_seconds = n.behind_since.map_or(0, |since| since.elapsed().as_secs());
    let _ = write!(
        t,
        "# Nats\r\nnats_enabled:1\r\nnats_server:{}\r\nnats_connected:{}\r\n\
         nats_stream:{}\r\nnats_writer:{}\r\nnats_relay_state:{}\r\nnats_confirmed_seq:{}\r\n\
         nats_lag_events:{}\r\nnats_lag_seconds:{lag_seconds}\r\nnats_reconnects:{}\r\n\
         nats_connect_failures:{}\r\nnats_published:{}\r\nnats_retries:{}\r\nnats_last_error:{}\r\n",
        n.server.as_deref().unwrap_or(""),
        u8::from(n.connected),
        n.stream,
        n.writer,
        n.state,
        n.confirmed,
        n.lag_events,
        n.reconnects,
        n.connect_failures,
        n.published,
        n.retries,
        // One line: INFO fields end at CRLF.
        n.last_error
            .as_deref()
            .unwrap_or("")
            .replace(['\r', '\n'], " "),
    );
    if let Some(h) = &ctx.stats.handler_offsets {
        render_kv_writer("handler_offsets", h, t);
    }
    if let Some(h) = &ctx.stats.webhook_kv {
        render_kv_writer("webhook_kv", h, t);
    }
    if let Some(r) = &ctx.stats.replication {
        let _ = write!(
            t,
            "replicated_timeout_ms:{}\r\nreplicated_held_ticks:{}\r\n\
             replicated_waiting_ticks:{}\r\nreplicated_noreplicas:{}\r\n",
            ctx.config.replication_timeout.as_millis(),
            r.held_ticks,
            r.waiting_ticks,
            r.noreplicas,
        );
    }
}

/// The lines `nats_{name}_*` of a writer that puts values into a KV bucket.
fn render_kv_writer(name: &str, h: &WriterStatus, t: &mut String) {
    let _ = write!(
        t,
        "nats_{name}_bucket:{}\r\nnats_{name}_state:{}\r\nnats_{name}_puts:{}\r\n\
         nats_{name}_pending:{}\r\nnats_{name}_last_error:{}\r\n",
        h.bucket,
        h.state,
        h.puts,
        h.pending,
        // One line: INFO fields end at CRLF.
        h.last_error
            .as_deref()
            .unwrap_or("")
            .replace(['\r', '\n'], " "),
    );
}

/// The `# Events` section: the log, consumer groups, durable handlers.
fn render_events(ctx: &mut Ctx<'_>, t: &mut String) {
    let counts = ctx.store().counts();
    let _ = write!(
        t,
        "# Events\r\nevents_length:{}\r\nevents_last_seq:{}\r\ntrimmed_events:{}\r\n",
        counts.events, counts.last_seq, ctx.stats.trimmed_events
    );
    match ctx.store().groups() {
        Ok(groups) => {
            let _ = write!(t, "consumer_groups:{}\r\n", groups.len());
            for g in groups {
                let _ = write!(
                    t,
                    "group:{}:consumers={},pending={},last_delivered={},lag={}\r\n",
                    g.name,
                    g.consumers,
                    g.pending,
                    g.last_delivered,
                    g.lag(counts.last_seq)
                );
            }
        }
        Err(e) => {
            let _ = write!(t, "consumer_groups_error:{e}\r\n");
        }
    }
    for (name, offset) in &ctx.stats.durable_offsets {
        let _ = write!(
            t,
            "durable_handler:{name}:offset={offset},lag={}\r\n",
            (counts.last_seq - offset).max(0)
        );
    }
}
