//! `deploy:Deploy`: the plan carried out stack by stack in dependency order, the policies put
//! in force once the `service-roles` stack is done, and on a failure every change made so far
//! undone in reverse order, so the deployment ends in `UPDATE_ROLLBACK_COMPLETE` with the
//! resources as they were. Deletions wait for a cleanup phase after everything else
//! succeeded, so a failure never has to undo one. Only a complete deploy replaces the recorded
//! state and the spec the running services read.

use std::sync::Arc;

use model::spec::Spec;
use policy::Resource as PolicyResource;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::apply::{Applier, Deleted};
use super::plan::{Change, Planned, SpecInput, deployed, desired, plan, restart_required};
use super::policies::swap_policies;
use super::repo::DeploymentKind;
use super::run::{Run, deploying_caller, finish_run, record_state, start_run};
use super::state::Deploy;
use super::template::{Resource, STACKS};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::{Effect, Platform};

pub(super) async fn deploy_action(deploy: &Deploy, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SpecInput = ctx.parse_recorded(input)?;
    ctx.authorize(PolicyResource::Service("deploy".into()))?;
    let (spec, resources) = desired(&input).await?;
    only_operators_name_packages(ctx, &spec)?;
    // Platform settings take effect when the server next starts; the answer names them.
    let restart = restart_required(&ctx.platform.spec, &spec);
    let _one_at_a_time = deploy.deploying.lock().await;
    let caller = deploying_caller(ctx);
    let old = deployed(ctx.platform).await?;
    let planned = plan(&old, &resources);
    let changes: Vec<Value> = planned.iter().map(Planned::json).collect();
    let applier = deploy.applier(caller, ctx.source_ip, &spec);
    let run = start_run(ctx, DeploymentKind::Deploy, Some(&input), input.client_request_token.clone()).await?;
    let mut rollout = Rollout {
        platform: ctx.platform,
        correlation_id: ctx.correlation_id().map(str::to_owned),
        run,
        applier,
        first: old.is_empty(),
        applied: Vec::new(),
        policies_swapped: false,
    };
    if let Err((logical_id, err)) = rollout.apply(&planned, &spec).await {
        return Err(rollout.roll_back(&logical_id, err).await);
    }
    let retained = rollout.clean_up(&planned).await;
    let run = rollout.into_run();
    record_state(ctx.platform, &resources).await?;
    finish_run(&run, "UPDATE_COMPLETE").await?;
    *ctx.platform.current.write().expect("current spec lock") = Arc::new(spec);
    deploy.streaming.wake.notify_one();
    Ok(json!({
        "DeploymentId": run.deployment_id,
        "SpecSha256": hex::encode(sha2::Sha256::digest(input.spec.0.as_bytes())),
        "Changes": changes,
        "Retained": retained,
        "RestartRequired": restart,
        "Events": run.events,
    }))
}

/// An image's Python packages are installed on this host (unprivileged, wheels only — but
/// still code of the spec's choosing, run at build and in every notebook): only the host's
/// own operator, on the control socket, may name new ones. Others (a console admin, a
/// federated admin) may deploy specs whose images keep the packages already deployed.
fn only_operators_name_packages(ctx: &Ctx<'_>, spec: &Spec) -> Result<(), ActionError> {
    if matches!(ctx.caller.principal, policy::Principal::Operator { .. }) {
        return Ok(());
    }
    let current = ctx.platform.current();
    for image in &spec.images {
        let deployed = current.images.iter().find(|i| i.name == image.name).map(|i| &i.python_packages);
        if !image.python_packages.is_empty() && deployed != Some(&image.python_packages) {
            return Err(ActionError::new(
                403,
                ErrorCode::AccessDeniedException,
                format!(
                    "images.{}.python_packages: only a local operator (on the control socket) may name Python packages for an image; \
                     ask one to deploy this spec",
                    image.name
                ),
            ));
        }
    }
    Ok(())
}

/// A change made during this run, kept to undo it if a later one fails.
struct Applied {
    old: Option<Resource>,
    new: Resource,
    replaced: bool,
}

/// A deploy under way: its run, the changes made so far and whether the policies changed,
/// which is what a rollback has to undo.
struct Rollout<'a, 'spec> {
    platform: &'a Platform,
    /// The deploy's one correlation id, which the policy records carry too.
    correlation_id: Option<String>,
    run: Run<'a>,
    /// Borrows the spec being deployed, which outlives the rollout to become the current one.
    applier: Applier<'spec>,
    /// The first deploy (nothing was deployed): its statuses say CREATE, a later one's UPDATE.
    first: bool,
    applied: Vec<Applied>,
    policies_swapped: bool,
}

impl<'a> Rollout<'a, '_> {
    /// The run, once nothing more is applied (the applier, which borrows the spec, is gone).
    fn into_run(self) -> Run<'a> {
        self.run
    }

    /// Creates, updates and replaces, stack by stack; the first failure stops it and names
    /// what failed (a resource, or the `service-roles` stack whose policies did not load).
    async fn apply(&mut self, planned: &[Planned], spec: &Spec) -> Result<(), (String, ActionError)> {
        let (in_progress, complete, failed) = if self.first {
            ("CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_FAILED")
        } else {
            ("UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_FAILED")
        };
        for (stack, _) in STACKS {
            let here: Vec<&Planned> = planned.iter().filter(|p| p.resource().stack == *stack && p.change != Change::Delete).collect();
            if here.is_empty() {
                continue;
            }
            self.run.stack_event(stack, in_progress, None).await;
            for p in here {
                if let Err((logical_id, err)) = self.apply_one(p).await {
                    self.run.stack_event(stack, failed, Some(&format!("{logical_id}: {}", err.message))).await;
                    return Err((logical_id, err));
                }
            }
            if *stack == "service-roles" {
                swap_policies(self.platform, spec, self.correlation_id.clone(), Effect::Gated)
                    .await
                    .map_err(|err| (stack.to_string(), err))?;
                self.policies_swapped = true;
            }
            self.run.stack_event(stack, complete, None).await;
        }
        Ok(())
    }

    /// One create, update or replace with its events, kept to be undone once it succeeded.
    async fn apply_one(&mut self, p: &Planned) -> Result<(), (String, ActionError)> {
        let new = p.new.as_ref().expect("creates, updates and replaces have a new resource");
        let (verb, reason) = match &p.change {
            Change::Create => ("CREATE", None),
            Change::Replace { immutable, .. } => {
                ("UPDATE", Some(format!("Requested update requires the creation of a new physical resource ({})", immutable.join(", "))))
            }
            _ => ("UPDATE", None),
        };
        self.run.resource_event(new, &format!("{verb}_IN_PROGRESS"), reason.as_deref()).await;
        let result = match &p.change {
            Change::Create => self.applier.create(new).await,
            Change::Replace { .. } => self.applier.replace(p.old.as_ref().expect("a replacement has an old resource"), new).await,
            _ => self.applier.update(p.old.as_ref(), new).await,
        };
        match result {
            Ok(()) => {
                self.run.resource_event(new, &format!("{verb}_COMPLETE"), None).await;
                self.applied.push(Applied { old: p.old.clone(), new: new.clone(), replaced: matches!(p.change, Change::Replace { .. }) });
                Ok(())
            }
            Err(err) => {
                self.run.resource_event(new, &format!("{verb}_FAILED"), Some(&err.message)).await;
                Err((new.logical_id.clone(), err))
            }
        }
    }

    /// Undoes every change of this run, newest first, and the policy swap; the answer is the
    /// error the deploy fails with, saying whether the environment is as it was.
    async fn roll_back(mut self, logical_id: &str, err: ActionError) -> ActionError {
        let rollback_in_progress = if self.first { "ROLLBACK_IN_PROGRESS" } else { "UPDATE_ROLLBACK_IN_PROGRESS" };
        let rollback_complete = if self.first { "ROLLBACK_COMPLETE" } else { "UPDATE_ROLLBACK_COMPLETE" };
        let mut stacks_touched: Vec<&'static str> = self.applied.iter().map(|a| a.new.stack).collect();
        stacks_touched.dedup();
        for stack in &stacks_touched {
            self.run.stack_event(stack, rollback_in_progress, Some(&format!("{logical_id} failed: {}", err.message))).await;
        }
        if self.policies_swapped {
            let previous = self.platform.current();
            let _ = swap_policies(self.platform, &previous, self.correlation_id.clone(), Effect::Recorded).await;
        }
        let rollback_errors = self.undo_applied().await;
        let final_status = if rollback_errors.is_empty() { rollback_complete } else { "UPDATE_ROLLBACK_FAILED" };
        for stack in &stacks_touched {
            self.run.stack_event(stack, final_status, None).await;
        }
        if let Err(not_finished) = finish_run(&self.run, final_status).await {
            return not_finished;
        }
        let mut message = format!("the deploy failed at `{logical_id}`: {}; ", err.message);
        if rollback_errors.is_empty() {
            message.push_str("every change was rolled back, the environment is as it was");
        } else {
            message.push_str(&format!("the rollback could not undo: {}; deploy again once fixed", rollback_errors.join("; ")));
        }
        ActionError::new(if err.is_client_error() { err.status } else { 500 }, ErrorCode::DeploymentFailed, message)
    }

    /// Undoes the applied changes, newest first; the answer lists those that could not be.
    async fn undo_applied(&mut self) -> Vec<String> {
        let mut rollback_errors = Vec::new();
        for a in self.applied.iter().rev() {
            let undone = match (&a.old, a.replaced) {
                (None, _) => self.applier.delete(&a.new).await.map(drop),
                (Some(old), true) => self.applier.replace(&a.new, old).await,
                (Some(old), false) => self.applier.update(Some(&a.new), old).await,
            };
            match undone {
                Ok(()) => {
                    self.run
                        .resource_event(&a.new, if a.old.is_none() { "DELETE_COMPLETE" } else { "UPDATE_COMPLETE" }, Some("rolled back"))
                        .await
                }
                Err(e) => {
                    self.run.resource_event(&a.new, "UPDATE_FAILED", Some(&format!("rollback: {}", e.message))).await;
                    rollback_errors.push(format!("{}: {}", a.new.logical_id, e.message));
                }
            }
        }
        rollback_errors
    }

    /// Cleanup: what the spec no longer has, newest stack first; a failure here is reported
    /// but rolls nothing back (the new state already works). The answer lists what was kept.
    async fn clean_up(&mut self, planned: &[Planned]) -> Vec<Value> {
        let mut retained = Vec::new();
        for p in planned.iter().filter(|p| p.change == Change::Delete) {
            let r = p.resource();
            self.run.resource_event(r, "DELETE_IN_PROGRESS", None).await;
            match self.applier.delete(r).await {
                Ok(Deleted::Removed) => self.run.resource_event(r, "DELETE_COMPLETE", None).await,
                Ok(Deleted::Retained(reason)) => {
                    self.run.resource_event(r, "DELETE_SKIPPED", Some(&reason)).await;
                    retained.push(json!({ "LogicalResourceId": r.logical_id, "Reason": reason }));
                }
                Err(err) => {
                    self.run.resource_event(r, "DELETE_FAILED", Some(&err.message)).await;
                    retained.push(json!({ "LogicalResourceId": r.logical_id, "Reason": err.message }));
                }
            }
        }
        retained
    }
}
