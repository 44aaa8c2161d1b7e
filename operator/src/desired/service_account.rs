//! ServiceAccount of the API pods: no API token is mounted (the API never talks to Kubernetes).

use k8s_openapi::api::core::v1::ServiceAccount;

use super::child_meta;
use super::pod::pull_secrets;
use crate::names::Component;
use crate::validate::ValidatedPlatform;

pub fn build(p: &ValidatedPlatform) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(p, p.names.api(), Component::ApiServer),
        automount_service_account_token: Some(false),
        image_pull_secrets: pull_secrets(p),
        secrets: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::platform;

    #[test]
    fn token_is_not_automounted() {
        let sa = build(&platform(|_| {}));
        assert_eq!(sa.metadata.name.as_deref(), Some("demo-api"));
        assert_eq!(sa.automount_service_account_token, Some(false));
        assert!(sa.image_pull_secrets.is_none());
    }

    #[test]
    fn pull_secrets_are_listed() {
        let sa = build(&platform(|s| {
            s.api_server.image.pull_secrets = vec!["regcred".into()]
        }));
        assert_eq!(sa.image_pull_secrets.unwrap()[0].name, "regcred");
    }
}
