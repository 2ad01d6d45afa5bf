//! `ecs-xds discover`: polls AWS once and prints the inventory, as a table or as the JSON that
//! `run`, `render` and `validate` read back with `--inventory`.

use std::path::Path;

use super::CommandError;
use crate::discover::DiscoverError;
use crate::settings::{DiscoverConfig, Settings};

mod table;

pub use table::inventory_table;

/// The discover sections of `settings`, checked.
pub(super) fn checked(settings: &Settings) -> Result<DiscoverConfig, CommandError> {
    Ok(settings.discover().map_err(DiscoverError::from)?)
}

/// Polls every source of `config` once and prints what was found.
pub async fn discover(config: &Path, json: bool) -> Result<(), CommandError> {
    let settings = Settings::load(config)?;
    let inventory = crate::discover::discover_once(checked(&settings)?).await?;
    match json {
        true => {
            let text = serde_json::to_string_pretty(&inventory).expect("inventory serializes");
            println!("{text}");
        }
        false => print!("{}", inventory_table(&inventory)),
    }
    Ok(())
}
