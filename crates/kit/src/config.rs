//! Configuration from the environment: `OBA_*` variables, optionally from a `.env` file.
//!
//! Reading never stops at the first problem: [`Env`] collects every bad or missing setting,
//! and [`ConfigError`] prints one line per problem naming the variable, so an operator
//! fixes them all in one go. Values remember the variable they came from ([`Setting`]) so
//! that a later failure (a database that cannot be reached, a key file that cannot be
//! read) still names the setting to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A configured value together with the variable it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub key: String,
    pub value: T,
}

impl<T> Setting<T> {
    pub fn new(key: impl Into<String>, value: T) -> Self {
        Self {
            key: key.into(),
            value,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Setting<U> {
        Setting {
            key: self.key,
            value: f(self.value),
        }
    }

    /// A problem with this setting, for start-up errors found after parsing.
    pub fn problem(&self, message: impl fmt::Display) -> ConfigError {
        ConfigError::single(&self.key, message)
    }
}

/// One problem with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Every problem found in the configuration; displays as one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn single(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            problems: vec![Problem {
                key: key.into(),
                message: message.to_string(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "configuration error: {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// A snapshot of the `OBA_*` variables, read setting by setting.
#[derive(Debug, Default, Clone)]
pub struct Env {
    vars: BTreeMap<String, String>,
    problems: Vec<Problem>,
    /// Every setting read so far and whether it was required: what `oba keys` lists, and
    /// what the deployment check compares with the manifests.
    read: BTreeMap<String, bool>,
}

impl Env {
    /// The process environment, after loading `./.env` if there is one (real variables win).
    pub fn from_process() -> Self {
        // A missing .env is the normal case; a broken one is reported by dotenvy's error.
        let dotenv_problem = match dotenvy::dotenv() {
            Ok(_) => None,
            Err(e) if e.not_found() => None,
            Err(e) => Some(Problem {
                key: ".env".into(),
                message: e.to_string(),
            }),
        };
        let mut env = Self::from_pairs(std::env::vars());
        env.problems.extend(dotenv_problem);
        env
    }

    /// An environment from explicit pairs (tests, and the in-process `up` wiring).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with("OBA_"))
            .collect();
        Self {
            vars,
            problems: Vec::new(),
            read: BTreeMap::new(),
        }
    }

    /// Sets a variable unless it is already set: how a mode supplies its defaults.
    pub fn default_to(&mut self, key: &str, value: impl Into<String>) {
        self.vars
            .entry(key.to_owned())
            .or_insert_with(|| value.into());
    }

    /// Sets a variable, replacing any value it had: a value a mode must decide.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.to_owned(), value.into());
    }

    /// Every variable, to hand on to a child process.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An optional string setting.
    pub fn optional(&mut self, key: &str) -> Option<Setting<String>> {
        self.read.entry(key.to_owned()).or_insert(false);
        self.get(key).map(|v| Setting::new(key, v.to_owned()))
    }

    /// A string setting that must be present; a missing one is recorded as a problem.
    pub fn required(&mut self, key: &str) -> Setting<String> {
        self.read.insert(key.to_owned(), true);
        match self.get(key) {
            Some(v) => Setting::new(key, v.to_owned()),
            None => {
                self.problem(key, "is required but not set");
                Setting::new(key, String::new())
            }
        }
    }

    /// A parsed setting with a default; an unparsable value is recorded as a problem.
    pub fn parsed<T>(&mut self, key: &str, default: T) -> Setting<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.read.entry(key.to_owned()).or_insert(false);
        let value = match self.get(key) {
            None => default,
            Some(raw) => match raw.parse() {
                Ok(v) => v,
                Err(e) => {
                    self.problem(key, format!("invalid value {raw:?}: {e}"));
                    default
                }
            },
        };
        Setting::new(key, value)
    }

    /// The settings read so far: key and whether it is required.
    pub fn read_settings(&self) -> impl Iterator<Item = (&str, bool)> {
        self.read.iter().map(|(k, r)| (k.as_str(), *r))
    }

    pub fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.to_string(),
        });
    }

    /// Ends reading: `Err` with every problem found, if any.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: std::mem::take(&mut self.problems),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn every_problem_is_reported_with_its_variable() {
        let mut env = Env::from_pairs([("OBA_LISTEN_ADDR", "nonsense"), ("OBA_PORT", "x")]);
        let _: Setting<SocketAddr> = env.parsed("OBA_LISTEN_ADDR", ([0, 0, 0, 0], 8080).into());
        let _ = env.required("OBA_DATABASE_URL");
        let err = env.finish().expect_err("two bad settings");
        let text = err.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("OBA_LISTEN_ADDR: invalid value \"nonsense\""));
        assert!(text.contains("OBA_DATABASE_URL: is required"));
    }

    #[test]
    fn defaults_apply_only_to_unset_variables() {
        let mut env = Env::from_pairs([("OBA_A", "set"), ("OTHER", "ignored")]);
        env.default_to("OBA_A", "default");
        env.default_to("OBA_B", "default");
        assert_eq!(env.get("OBA_A"), Some("set"));
        assert_eq!(env.get("OBA_B"), Some("default"));
        assert_eq!(env.get("OTHER"), None);
    }

    #[test]
    fn settings_read_are_listed_with_whether_required() {
        let mut env = Env::from_pairs::<&str, &str>([]);
        let _ = env.optional("OBA_A");
        let _ = env.required("OBA_B");
        let _: Setting<u16> = env.parsed("OBA_C", 1);
        let read: Vec<_> = env.read_settings().collect();
        assert_eq!(read, [("OBA_A", false), ("OBA_B", true), ("OBA_C", false)]);
    }

    #[test]
    fn empty_value_counts_as_unset() {
        let mut env = Env::from_pairs([("OBA_DATABASE_URL", "")]);
        let _ = env.required("OBA_DATABASE_URL");
        assert!(env.finish().is_err());
    }
}
