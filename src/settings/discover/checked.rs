//! Discover settings that passed every check, with what checking made of them, so that the
//! code after the check neither checks nor parses again.

use std::ops::Deref;

use super::{DiscoverSettings, ServiceFilter};
use crate::problem::Problems;

/// [`DiscoverSettings`] that passed [`DiscoverSettings::check`], the only way to make one:
/// with the compiled service filter and, with `[events]` on, where events come from.
#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    settings: DiscoverSettings,
    filter: ServiceFilter,
    events: Option<EventsSource>,
}

/// Where ECS events are read from (`[events]` on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsSource {
    /// `events.queue_url`: one queue the EventBridge rule targets.
    Queue(String),
    /// `events.topic_arn`: an SNS topic, which each replica subscribes its own queue to.
    Topic(String),
}

impl DiscoverSettings {
    /// Checks every value serde cannot (globs, templates, intervals, the sources), all
    /// problems at once, and compiles what the checks accepted.
    pub fn check(self) -> Result<DiscoverConfig, Problems> {
        self.validate()?;
        let events = match (&self.events.queue_url, &self.events.topic_arn) {
            _ if !self.events.enabled => None,
            (Some(url), _) => Some(EventsSource::Queue(url.clone())),
            (None, Some(arn)) => Some(EventsSource::Topic(arn.clone())),
            (None, None) => None,
        };
        Ok(DiscoverConfig {
            filter: self.ecs.service_filter(),
            events,
            settings: self,
        })
    }
}

impl DiscoverConfig {
    /// `ecs.include_services` / `ecs.exclude_services`, compiled.
    pub(crate) fn filter(&self) -> &ServiceFilter {
        &self.filter
    }

    /// Where events come from; `None` with `[events]` off.
    pub fn events_source(&self) -> Option<&EventsSource> {
        self.events.as_ref()
    }
}

/// Read access to the settings themselves.
impl Deref for DiscoverConfig {
    type Target = DiscoverSettings;

    fn deref(&self) -> &DiscoverSettings {
        &self.settings
    }
}

/// Equal settings: the rest is made from them.
impl PartialEq for DiscoverConfig {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}
