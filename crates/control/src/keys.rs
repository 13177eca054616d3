//! `keys:` — symmetric keys with KMS's actions and members. Key material is AES-256-GCM,
//! stored wrapped by the host master key (`<data-dir>/master.key`, mode 0600).

use serde_json::Value;

use crate::core::actions::KeysAction;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;

mod admin;
mod crypto;
mod repo;
mod rows;

pub(crate) use crypto::{decrypt_blob, encrypt_with};
pub(crate) use repo::KeyRow;
pub(crate) use rows::{aliases_of, insert_alias_if_absent, insert_key, resolve_for_use, trail_signing_secret};

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: KeysAction, input: Value) -> Result<Value, ActionError> {
    match action {
        KeysAction::CreateKey => admin::create_key(ctx, input).await,
        KeysAction::DescribeKey => admin::describe_key(ctx, input).await,
        KeysAction::ListKeys => admin::list_keys(ctx, input).await,
        KeysAction::CreateAlias => admin::create_alias(ctx, input).await,
        KeysAction::ListAliases => admin::list_aliases(ctx, input).await,
        KeysAction::EnableKeyRotation => admin::enable_rotation(ctx, input).await,
        KeysAction::DisableKeyRotation => admin::disable_rotation(ctx, input).await,
        KeysAction::GetKeyRotationStatus => admin::get_rotation_status(ctx, input).await,
        KeysAction::RotateKeyOnDemand => admin::rotate_on_demand(ctx, input).await,
        KeysAction::GenerateDataKey => crypto::generate_data_key(ctx, input).await,
        KeysAction::Encrypt => crypto::encrypt(ctx, input).await,
        KeysAction::Decrypt => crypto::decrypt(ctx, input).await,
        KeysAction::ScheduleKeyDeletion => admin::schedule_deletion(ctx, input).await,
        KeysAction::EnableKey | KeysAction::DisableKey => admin::enable_disable(ctx, action, input).await,
        KeysAction::CancelKeyDeletion => admin::cancel_deletion(ctx, input).await,
    }
}
