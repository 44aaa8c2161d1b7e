//! Writing the computed status: a patch of the status subresource, only when it changed.

use super::*;

/// Patches the status through the status subresource (server-side apply) when it changed.
/// Returns whether a patch was sent.
pub async fn patch_if_changed(
    client: &Client,
    hp: &HealthcarePlatform,
    status: &HealthcarePlatformStatus,
) -> Result<bool, kube::Error> {
    if hp.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let ns = hp.namespace().unwrap_or_default();
    let api: Api<HealthcarePlatform> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "apiVersion": "caduceus.io/v1alpha1",
        "kind": "HealthcarePlatform",
        "status": status,
    });
    api.patch_status(
        &hp.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

/// A kube error as a status-safe message.
pub fn status_error(e: &kube::Error) -> String {
    describe(e)
}
