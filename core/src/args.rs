//! Parsing of command arguments into typed options, with error messages that name the problem.
//!
//! Kept apart from the module so every option parser is unit-tested without a server. Messages
//! are the text after `ERR `.

/// A cursor over the arguments of one command (after the command name).
pub struct Args<'a> {
    args: &'a [&'a [u8]],
    pos: usize,
    command: &'static str,
}

impl<'a> Args<'a> {
    /// A cursor over `args` of `command` (the name is used in messages).
    pub fn new(command: &'static str, args: &'a [&'a [u8]]) -> Self {
        Args {
            args,
            pos: 0,
            command,
        }
    }

    /// The next argument, if any.
    pub fn next_arg(&mut self) -> Option<&'a [u8]> {
        let a = self.args.get(self.pos).copied();
        self.pos += usize::from(a.is_some());
        a
    }

    /// The next argument, upper-cased, for keyword matching.
    pub fn next_keyword(&mut self) -> Option<String> {
        self.next_arg()
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
    }

    /// The value after option `option`: an integer in `min..=max`.
    pub fn int_value(&mut self, option: &str, min: i64, max: i64) -> Result<i64, String> {
        let raw = self.value(option)?;
        let text = String::from_utf8_lossy(raw);
        let v: i64 = text.parse().map_err(|_| {
            format!(
                "{} {option} needs an integer from {min} to {max}, got '{text}'",
                self.command
            )
        })?;
        if v < min || v > max {
            return Err(format!(
                "{} {option} must be from {min} to {max}, got {v}",
                self.command
            ));
        }
        Ok(v)
    }

    /// The raw value after option `option`.
    pub fn value(&mut self, option: &str) -> Result<&'a [u8], String> {
        self.next_arg()
            .ok_or_else(|| format!("{} {option} needs a value", self.command))
    }

    /// The value after `option`, which must be one of `choices` (case-insensitive); returns its
    /// index in `choices`.
    pub fn choice(&mut self, option: &str, choices: &[&str]) -> Result<usize, String> {
        let raw = self.value(option)?;
        let text = String::from_utf8_lossy(raw);
        choices
            .iter()
            .position(|c| c.eq_ignore_ascii_case(&text))
            .ok_or_else(|| {
                format!(
                    "{} {option} must be one of {}, got '{text}'",
                    self.command,
                    choices.join("|")
                )
            })
    }

    /// The error for an option this command does not know.
    pub fn unknown(&self, word: &str) -> String {
        format!("{}: unknown option '{word}'", self.command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_errors() {
        let raw: Vec<&[u8]> = vec![b"count", b"5", b"type", b"READ", b"window"];
        let mut a = Args::new("OPT.X", &raw);
        assert_eq!(a.next_keyword().as_deref(), Some("COUNT"));
        assert_eq!(a.int_value("COUNT", 1, 10), Ok(5));
        assert_eq!(a.next_keyword().as_deref(), Some("TYPE"));
        assert_eq!(a.choice("TYPE", &["all", "read"]), Ok(1));
        assert_eq!(a.next_keyword().as_deref(), Some("WINDOW"));
        assert_eq!(a.value("WINDOW"), Err("OPT.X WINDOW needs a value".into()));
        let raw: Vec<&[u8]> = vec![b"99"];
        let mut a = Args::new("OPT.X", &raw);
        assert_eq!(
            a.int_value("COUNT", 1, 10),
            Err("OPT.X COUNT must be from 1 to 10, got 99".into())
        );
        let raw: Vec<&[u8]> = vec![b"x"];
        let mut a = Args::new("OPT.X", &raw);
        assert!(a.int_value("COUNT", 1, 10).unwrap_err().contains("got 'x'"));
    }
}
