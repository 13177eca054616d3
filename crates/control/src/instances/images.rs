//! Images and instance types: the newest built version of an image, images built from the
//! spec's recipes on first use, and the instance types the spec declares.

use std::path::PathBuf;

use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;

fn images_dir(plane: &Platform) -> PathBuf {
    plane.data_dir.join("images")
}

/// The newest version of an image.
pub(crate) fn find_image(plane: &Platform, name: &str) -> Result<sandbox::image::Image, ActionError> {
    let dir = images_dir(plane).join(name);
    let mut versions: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().filter_map(|e| Some((e.file_name().to_str()?.parse::<u64>().ok()?, e.path()))).collect())
        .unwrap_or_default();
    versions.sort();
    let (_, newest) = versions.pop().ok_or_else(|| {
        ActionError::not_found(
            ErrorCode::ResourceNotFoundException,
            format!("image `{name}` is not built; deploy a spec that declares it, or run `datasandbox image build <recipe> --name {name}`"),
        )
    })?;
    sandbox::image::Image::open(&newest).map_err(ActionError::internal)
}

/// Builds an image the spec declares unless it is built: `base` and `desktop` take well under
/// a second; `notebook` reuses the cached venv, or installs it from PyPI the first time
/// (about a minute). Runs on a blocking thread.
pub(crate) async fn ensure_image(plane: &Platform, spec: &model::spec::Spec, name: &str) -> Result<(), ActionError> {
    if find_image(plane, name).is_ok() {
        return Ok(());
    }
    let Some(image) = spec.images.iter().find(|i| i.name == name) else {
        return Err(ActionError::validation(format!(
            "image `{name}` is not built and the spec declares no recipe for it; declare [images.{name}] or build it with `datasandbox image build base --name {name}`"
        )));
    };
    let recipe = sandbox::image::Recipe::named(&image.recipe, &image.python_packages, &plane.image_cache)
        .ok_or_else(|| ActionError::validation(format!("image `{name}` has the unknown recipe `{}`", image.recipe)))?;
    let (images, owned, kind) = (images_dir(plane), name.to_owned(), image.recipe.clone());
    tracing::info!(image = name, recipe = kind, "building the image the spec declares");
    let built = tokio::task::spawn_blocking(move || {
        // Two callers may race to build it; the loser finds it sealed.
        sandbox::image::build(&images, &owned, "1", &recipe, &mut |step| tracing::info!(image = owned, "{step}"))
            .map(drop)
            .or_else(|err| if images.join(&owned).join("1/manifest.json").exists() { Ok(()) } else { Err(err) })
    })
    .await
    .map_err(ActionError::internal)?;
    built.map_err(|err| {
        ActionError::validation(format!(
            "building image `{name}` ({kind} recipe) failed: {err}; fix that, or build it with `datasandbox image build {kind} --name {name}`"
        ))
    })
}

/// The application ids of an image's catalog.
pub(crate) fn catalog(plane: &Platform, image: &str) -> Result<Vec<String>, ActionError> {
    Ok(find_image(plane, image)?.manifest.applications.iter().map(|a| a.name.clone()).collect())
}

pub(crate) fn instance_type(plane: &Platform, name: &str) -> Result<model::spec::InstanceType, ActionError> {
    let spec = plane.current();
    spec.instance_types.iter().find(|t| t.name == name).cloned().ok_or_else(|| {
        let names: Vec<&str> = spec.instance_types.iter().map(|t| t.name.as_str()).collect();
        ActionError::validation(format!("InstanceType `{name}` is not one of {}", names.join(", ")))
    })
}
