//! Built-in sources, so the gateway can be tried with no backend: `builtin:clock`
//! emits one `tick` event per second whose id is the Unix time in seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use crate::sse::Event;

pub(crate) struct Clock {
    ticks: Interval,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let mut ticks = interval_at(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Self { ticks }
    }

    pub(crate) async fn next(&mut self) -> Event {
        self.ticks.tick().await;
        let now = SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Event {
            event: Some("tick".to_owned()),
            data: format!(
                "{{\"time\":\"{}\",\"unix\":{secs}}}",
                humantime::format_rfc3339_seconds(now)
            ),
            id: Some(secs.to_string()),
        }
    }
}
