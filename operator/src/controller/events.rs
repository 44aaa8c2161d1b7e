//! Kubernetes Events about a platform.

use super::*;

pub(super) async fn publish(
    ctx: &Context,
    hp: &HealthcarePlatform,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_related(ctx, hp, type_, reason, note, None).await;
}

/// Publishes an Event about the platform; `related` names the child it concerns. The recorder
/// folds Events with the same reason and related object into one series (keeping the first
/// note), so Events about different children need their own `related`.
pub(super) async fn publish_related(
    ctx: &Context,
    hp: &HealthcarePlatform,
    type_: EventType,
    reason: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: related,
    };
    if let Err(e) = ctx.recorder.publish(&event, &hp.object_ref(&())).await {
        debug!(platform = %key(hp), error = %describe(&e), "publishing event failed");
    }
}
