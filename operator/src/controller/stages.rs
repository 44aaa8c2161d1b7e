//! The staged reconcile of one platform: fresh read → validate → desired objects → apply →
//! compliance → status (computed, then patched only when changed).

use super::*;

pub(super) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

pub(super) async fn write_status(
    ctx: &Context,
    hp: &HealthcarePlatform,
    outcome: Outcome<'_>,
) -> Result<crate::crd::Phase, ReconcileError> {
    write_status_with(ctx, hp, outcome, None).await
}

/// `write_status` plus the compliance stage's status, conditions and metrics.
pub(super) async fn write_status_with(
    ctx: &Context,
    hp: &HealthcarePlatform,
    outcome: Outcome<'_>,
    compliance: Option<&ComplianceUpdate>,
) -> Result<crate::crd::Phase, ReconcileError> {
    let now = now();
    let mut new = status::compute(hp, outcome, now.clone());
    if let Some(update) = compliance {
        update.apply_to(&mut new, hp.metadata.generation, &now);
        match &update.assessment {
            Some(a) => ctx.metrics.compliance.record(&key(hp), a),
            None => ctx.metrics.compliance.forget(&key(hp)),
        }
        let backup = new
            .backup
            .as_ref()
            .and_then(|b| b.last_successful_time.as_ref());
        ctx.metrics.compliance.record_backup(&key(hp), backup);
    }
    status::patch_if_changed(&ctx.client, hp, &new)
        .await
        .map_err(|e| ReconcileError::Status(describe(&e)))?;
    ctx.metrics.set_phase(&key(hp), Some(new.phase));
    Ok(new.phase)
}

/// The platform as the API server has it now. The controller's cache can lag behind the
/// operator's own last status write (a Job event may trigger a reconcile before the watch
/// delivered that write); a status computed from the stale copy would move `status.backup`,
/// violation `since` times or the audit chain head backwards. `None`: the platform is gone.
pub(super) async fn fresh(
    ctx: &Context,
    hp: Arc<HealthcarePlatform>,
    ns: &str,
) -> Result<Option<Arc<HealthcarePlatform>>, ReconcileError> {
    let api: Api<HealthcarePlatform> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(&hp.name_any()).await {
        Ok(Some(live)) if live.resource_version() == hp.resource_version() => Ok(Some(hp)),
        Ok(Some(live)) => Ok(Some(Arc::new(live))),
        Ok(None) => Ok(None),
        Err(e) => Err(ReconcileError::Read(describe(&e))),
    }
}

/// Validate → build → apply → status for one platform.
pub(super) async fn apply_platform(
    hp: Arc<HealthcarePlatform>,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let ns = hp.namespace().ok_or(ReconcileError::NoNamespace)?;
    let Some(hp) = fresh(ctx, hp, &ns).await? else {
        return Ok(Action::await_change());
    };
    let cfg = &ctx.config;

    let p = match validate(&hp, &ns) {
        Ok(p) => p,
        Err(err) => {
            ctx.metrics.errors.with_label_values(&["InvalidSpec"]).inc();
            let changed =
                hp.status.as_ref().map(|s| s.observed_generation) != Some(hp.metadata.generation);
            write_status(ctx, &hp, Outcome::Invalid(&err)).await?;
            if changed {
                publish(ctx, &hp, EventType::Warning, "InvalidSpec", err.to_string()).await;
            }
            // Nothing to retry: a spec change triggers the next reconcile.
            return Ok(Action::requeue(cfg.requeue_interval));
        }
    };

    if hp.spec.paused {
        let mut observed = apply::observe(&ctx.client, &p).await?;
        // Nothing is built while paused: the CA to trust is the one in the cluster (a failed
        // read leaves none: the self-report is then an error, never a pass).
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        let api_ca = secrets
            .get_opt(&p.names.api_internal_tls())
            .await
            .ok()
            .flatten()
            .and_then(|s| crate::desired::api_tls::ca_bundle(&s));
        observed.self_report = compliance::stage::read_self_report(
            &ctx.self_reports,
            &p,
            &observed,
            api_ca.as_deref(),
        )
        .await;
        write_status(ctx, &hp, Outcome::Observed(&p, &observed)).await?;
        return Ok(Action::requeue(cfg.requeue_interval));
    }

    let cnpg_installed = if p.spec.database.provider == DatabaseProvider::CloudNativePG {
        apply::cnpg_installed(&ctx.client).await?
    } else {
        true
    };

    let existing = apply::read_existing_secrets(&ctx.client, &p).await?;
    let provisioned_before = hp.status.as_ref().is_some_and(|s| s.api_server.is_some());
    let allow_new = hp
        .annotations()
        .get(ANNOTATION_ALLOW_NEW_SECRETS)
        .is_some_and(|v| v == "true");
    // The backup key only counts once a backup was taken with it (enabling backups later, or
    // upgrading from an operator without backups, generates it).
    let backups_taken_in = |hp: &HealthcarePlatform| {
        hp.status
            .as_ref()
            .and_then(|s| s.backup.as_ref())
            .is_some_and(|b| b.last_successful_time.is_some())
    };
    let mut backups_taken = backups_taken_in(&hp);
    if provisioned_before && !backups_taken && !existing.by_name.contains_key(&p.names.backup_key())
    {
        // About to generate the backup key of an existing platform: the cached platform may lag
        // behind the status this operator just wrote (a backup recorded a moment ago), so the
        // decision is made on a fresh read. A wrong answer here would silently replace the key
        // that encrypted existing backups.
        let fresh = Api::<HealthcarePlatform>::namespaced(ctx.client.clone(), &ns)
            .get_status(&hp.name_any())
            .await
            .map_err(|e| ReconcileError::Read(describe(&e)))?;
        backups_taken = backups_taken_in(&fresh);
    }
    if provisioned_before && !allow_new {
        let backup_key = p.names.backup_key();
        let missing: Vec<String> = apply::generated_secret_names(&p)
            .into_iter()
            .filter(|n| backups_taken || *n != backup_key)
            .filter(|n| !existing.by_name.contains_key(n))
            .collect();
        if !missing.is_empty() {
            ctx.metrics
                .errors
                .with_label_values(&["SecretsMissing"])
                .inc();
            write_status(ctx, &hp, Outcome::SecretsMissing(&missing)).await?;
            publish(
                ctx,
                &hp,
                EventType::Warning,
                "SecretsMissing",
                format!("generated Secret(s) {} are missing; not regenerating keys of an existing platform", missing.join(", ")),
            )
            .await;
            return Ok(Action::requeue(cfg.progress_interval));
        }
    }

    // Enforce stage: in `Enforce` mode non-compliant values are overridden before building.
    let evaluated_at = k8s_openapi::jiff::Timestamp::now();
    let (p, overrides) = compliance::prepare(&p, evaluated_at);
    let tls_plans = [
        secrets::postgres_tls_plan(&p, &existing, evaluated_at),
        secrets::redis_tls_plan(&p, &existing, evaluated_at),
        Some(crate::desired::api_tls::plan(&p, &existing, evaluated_at)),
    ];
    let children = build_children(&p, &existing, &mut SecretGenerator::random_at(evaluated_at));
    // `database.bootstrap.fromBackup`: the one-off restore Job (while it is pending).
    let restore_job = restore::job(&p);
    let tls_renewed = tls_renewal_note(&p, &existing, &children, &tls_plans);
    let desired = children.clone();
    let applier = Applier {
        client: ctx.client.clone(),
        namespace: &ns,
        tracker: &ctx.drift,
    };
    // Boxed: the apply future is large; keep it off the worker thread's stack.
    let mut observed = match Box::pin(applier.apply_all(&p, children, restore_job, cnpg_installed))
        .await
    {
        Ok(o) => o,
        Err(err) => {
            if let Err(status_err) = write_status(ctx, &hp, Outcome::ApplyFailed(&err)).await {
                warn!(platform = %key(&hp), error = %status_err, "status update after apply failure failed");
            }
            return Err(err.into());
        }
    };
    for (kind, name) in &observed.drift_corrected {
        ctx.metrics
            .drift_corrections
            .with_label_values(&[kind])
            .inc();
        info!(platform = %key(&hp), kind, name = %name, "drift corrected");
        let child = ObjectReference {
            kind: Some((*kind).to_string()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..ObjectReference::default()
        };
        publish_related(
            ctx,
            &hp,
            EventType::Normal,
            "DriftCorrected",
            format!(
                "{kind} {name} was changed or deleted outside the operator and has been restored"
            ),
            Some(child),
        )
        .await;
    }
    if let Some(note) = tls_renewed {
        info!(platform = %key(&hp), "certificates renewed");
        publish(ctx, &hp, EventType::Normal, "CertificateRenewed", note).await;
    }
    // Read once, for the compliance rules and the External cache's `CacheReady`.
    let api_ca = crate::desired::api_tls::ca_bundle(&desired.api_tls);
    observed.self_report =
        compliance::stage::read_self_report(&ctx.self_reports, &p, &observed, api_ca.as_deref())
            .await;
    let update = compliance::stage::run(
        &ctx.client,
        &hp,
        &p,
        &desired,
        &observed,
        overrides,
        evaluated_at,
    )
    .await;
    let phase =
        write_status_with(ctx, &hp, Outcome::Observed(&p, &observed), Some(&update)).await?;
    for e in &update.events {
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, &hp, type_, e.reason, e.note.clone()).await;
    }
    if !observed.cnpg_installed {
        return Ok(Action::requeue(
            cfg.progress_interval.max(Duration::from_secs(60)),
        ));
    }
    Ok(match phase {
        crate::crd::Phase::Ready | crate::crd::Phase::Stopped => {
            Action::requeue(cfg.requeue_interval)
        }
        _ => Action::requeue(cfg.progress_interval.min(cfg.requeue_interval)),
    })
}

/// The `CertificateRenewed` note when a built TLS Secret renews certificates of an existing one
/// (not on the first issue, and not when issuing failed and the old values were kept).
/// `plans`: the database's, the cache's and the API's, as [`secrets::postgres_tls_plan`],
/// [`secrets::redis_tls_plan`] and [`crate::desired::api_tls::plan`] return them.
pub(super) fn tls_renewal_note(
    p: &crate::validate::ValidatedPlatform,
    existing: &crate::desired::ExistingSecrets,
    children: &crate::desired::Children,
    plans: &[Option<crate::desired::certs::Plan>; 3],
) -> Option<String> {
    use crate::desired::{api_tls, postgres_tls, redis_tls};
    let api = Some(children.api_tls.clone());
    let sets = [
        (
            &children.postgres_tls,
            p.names.postgres_tls(),
            postgres_tls::SERVICE,
        ),
        (&children.redis_tls, p.names.redis_tls(), redis_tls::SERVICE),
        (&api, p.names.api_internal_tls(), api_tls::SERVICE),
    ];
    let notes: Vec<String> = sets
        .into_iter()
        .zip(plans)
        .filter_map(|((built, name, service), plan)| {
            let built = built.as_ref()?.data.as_ref()?;
            let before = existing.by_name.get(&name)?;
            if built == before {
                return None;
            }
            plan.as_ref()?.describe(service)
        })
        .collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}
