//! `event.*`: `from` (token based), `inject`, `get_current_id` and the
//! legacy `register`/`next`/`unregister`.
//!
//! Tokens are `"%020d,%020d"` (object generation, message generation) as in
//! the reference, so they order correctly as strings; `""` means "from the
//! beginning". `event.inject` returns the token just before the injected
//! change, so the next `event.from` with it reports that change.

use crate::api::{event_record, ApiError, Ctx};
use crate::datamodel::CLASSES;
use crate::generated::errors;
use crate::value::V;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const BATCH: Duration = Duration::from_millis(50);

pub fn token(gen: u64) -> String {
    format!("{gen:020},{:020}", 0)
}

pub fn parse_token(t: &str) -> Option<u64> {
    let t = t.trim();
    if t.is_empty() {
        return Some(0);
    }
    t.split(',').next()?.trim().parse().ok()
}

/// Subscription filter built from `classes` (`*`, `class`, `class/ref`).
struct Filter {
    all: bool,
    classes: Vec<String>,
    objects: Vec<(String, String)>,
}

impl Filter {
    fn new(classes: &[String]) -> Filter {
        let mut f = Filter {
            all: false,
            classes: vec![],
            objects: vec![],
        };
        for c in classes {
            if c == "*" {
                f.all = true;
            } else if let Some((cl, r)) = c.split_once('/') {
                f.objects.push((cl.to_lowercase(), r.to_string()));
            } else {
                f.classes.push(c.to_lowercase());
            }
        }
        f
    }
    fn wants(&self, class: &str, r: &str) -> bool {
        if !crate::datamodel::class(class).is_some_and(|c| c.gen_events) {
            return false;
        }
        let lc = class.to_lowercase();
        self.all
            || self.classes.contains(&lc)
            || self.objects.iter().any(|(c, o)| *c == lc && o == r)
    }
    /// As in the reference, the counts cover every table, subscribed or not.
    fn counted_classes(&self) -> Vec<&'static str> {
        CLASSES
            .iter()
            .filter(|c| c.in_db && c.gen_events)
            .map(|c| c.name)
            .collect()
    }
}

pub fn get_current_id(ctx: &Ctx) -> V {
    V::I(ctx.db.generation() as i64)
}

pub fn inject(ctx: &Ctx, class: &str, r: &str) -> Result<V, ApiError> {
    let cls = crate::datamodel::class(class)
        .filter(|c| c.in_db)
        .ok_or_else(|| errors::handle_invalid(class, r))?;
    let gen = ctx.db.touch(cls.name, r)?;
    Ok(V::S(token(gen.saturating_sub(1))))
}

pub fn register(ctx: &Ctx, session: &str, classes: &[String], add: bool) -> V {
    ctx.register(session, classes, add);
    V::S(String::new())
}

pub async fn from_token(
    ctx: &Arc<Ctx>,
    session: &str,
    classes: &[String],
    tok: &str,
    timeout: f64,
) -> Result<V, ApiError> {
    let since = parse_token(tok).ok_or_else(|| errors::event_from_token_parse_failure(tok))?;
    from(ctx, session, classes, since, timeout).await
}

async fn from(
    ctx: &Arc<Ctx>,
    session: &str,
    classes: &[String],
    since: u64,
    timeout: f64,
) -> Result<V, ApiError> {
    let filter = Filter::new(classes);
    let timeout = if timeout.is_finite() && timeout > 0.0 {
        Duration::from_secs_f64(timeout.min(86400.0))
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = ctx.db.subscribe();
    let (changes, gen) = loop {
        rx.borrow_and_update();
        let (ch, gen) = ctx.db.changes_since(since, |c, r| filter.wants(c, r));
        if !ch.is_empty() {
            // Batch changes that follow closely.
            tokio::time::sleep(BATCH).await;
            break ctx.db.changes_since(since, |c, r| filter.wants(c, r));
        }
        if tokio::time::Instant::now() >= deadline || !ctx.is_alive(session) {
            break (ch, gen);
        }
        // Wake on a change, the deadline, or periodically to notice logout.
        let wait = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(Duration::from_secs(5));
        let _ = tokio::time::timeout(wait, rx.changed()).await;
    };
    if !ctx.is_alive(session) {
        return Err(errors::session_invalid(session));
    }
    let mut counts = BTreeMap::new();
    for c in filter.counted_classes() {
        counts.insert(c.to_lowercase(), V::I32(ctx.db.count(c) as i32));
    }
    let mut out = BTreeMap::new();
    out.insert(
        "events".to_string(),
        V::A(changes.iter().map(|c| event_record(c, false)).collect()),
    );
    out.insert("valid_ref_counts".to_string(), V::M(counts));
    out.insert("token".to_string(), V::S(token(gen)));
    Ok(V::M(out))
}

pub async fn next(ctx: &Arc<Ctx>, session: &str) -> Result<V, ApiError> {
    let mut rx = ctx.db.subscribe();
    loop {
        rx.borrow_and_update();
        let Some((classes, last)) = ctx.registration(session) else {
            return Err(errors::session_not_registered(session));
        };
        if last < ctx.db.oldest_deletion_kept() {
            ctx.set_last_id(session, ctx.db.generation());
            return Err(errors::events_lost());
        }
        let list: Vec<String> = classes.into_iter().collect();
        let filter = Filter::new(&list);
        let (ch, _) = ctx.db.changes_since(last, |c, r| filter.wants(c, r));
        if let Some(max) = ch.iter().map(|c| c.gen).max() {
            ctx.set_last_id(session, max);
            return Ok(V::A(ch.iter().map(|c| event_record(c, true)).collect()));
        }
        if !ctx.is_alive(session) {
            return Err(errors::session_invalid(session));
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_order_as_strings() {
        assert!(token(9) < token(10));
        assert_eq!(parse_token(&token(42)), Some(42));
        assert_eq!(parse_token(""), Some(0));
        assert_eq!(parse_token("x"), None);
    }
}
