//! The one shape of "every problem at once", for every input a user writes: the settings file,
//! the templates and pushed bodies. A [`Problem`] names where it is (file, line, field path)
//! and what is wrong; [`Problems`] are all of an input's, reported together.

use std::fmt;
use std::path::PathBuf;

/// One problem in an input, at its place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file, when the input is one (a template, the settings); `None` for a pushed body.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// 1-based, where known.
    #[serde(skip)]
    pub line: Option<usize>,
    /// The field or key path (`listeners[0].filter_chains[0].name`, `ecs.clusters[2]`); empty
    /// for the whole input.
    pub path: String,
    #[serde(rename = "error")]
    pub message: String,
}

impl Problem {
    /// A problem at `path` (`""`: the whole input).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            file: None,
            line: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// This problem, in `file`.
    pub fn in_file(self, file: impl Into<PathBuf>) -> Problem {
        Problem {
            file: Some(file.into()),
            ..self
        }
    }

    /// This problem, at `line` of its file.
    pub fn on_line(self, line: Option<usize>) -> Problem {
        Problem { line, ..self }
    }
}

/// `file:line: path: message`, leaving out what is not known.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            sep = ": ";
        }
        if !self.path.is_empty() {
            write!(f, "{sep}{}", self.path)?;
            sep = ": ";
        }
        write!(f, "{sep}{}", self.message)
    }
}

/// Every problem found in one input (at least one), one per line when printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl Problems {
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every problem, joined by `separator`.
    pub fn lines(&self, separator: &str) -> String {
        let lines: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        lines.join(separator)
    }

    /// `Ok(())` when there is none.
    pub fn into_result(self) -> Result<(), Problems> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_prints_what_is_known_of_its_place() {
        let field = Problem::at("listeners[0].name", "needs a name");
        assert_eq!(field.to_string(), "listeners[0].name: needs a name");
        let located = field.clone().in_file("t/sidecar.toml").on_line(Some(7));
        assert_eq!(
            located.to_string(),
            "t/sidecar.toml:7: listeners[0].name: needs a name"
        );
        let whole = Problem::at("", "invalid JSON").in_file("a.json");
        assert_eq!(whole.to_string(), "a.json: invalid JSON");
        let all = Problems(vec![field, whole]);
        assert_eq!(
            all.to_string(),
            "listeners[0].name: needs a name\na.json: invalid JSON"
        );
    }
}
