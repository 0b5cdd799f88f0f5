//! Splitting `cmd`, `entrypoint` and `exec` strings into argv the way containerlab does
//! (it uses a shlex splitter, not a shell): whitespace separates words, single quotes keep
//! everything, double quotes keep everything but `\"` and `\\`, a backslash outside quotes
//! escapes the next character. A command that needs pipes or `&&` says `sh -c '…'`.

/// A command line that cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unterminated {quote} quote in {command:?}")]
    Unterminated {
        quote: &'static str,
        command: String,
    },
    #[error("trailing backslash in {command:?}")]
    TrailingBackslash { command: String },
}

/// Splits `command` into words.
pub fn split(command: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(SplitError::Unterminated {
                                quote: "single",
                                command: command.to_owned(),
                            });
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err(SplitError::Unterminated {
                                    quote: "double",
                                    command: command.to_owned(),
                                });
                            }
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(SplitError::Unterminated {
                                quote: "double",
                                command: command.to_owned(),
                            });
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => {
                        return Err(SplitError::TrailingBackslash {
                            command: command.to_owned(),
                        });
                    }
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_quotes() {
        assert_eq!(
            split("ip addr add 10.0.0.1/24 dev eth1").unwrap(),
            ["ip", "addr", "add", "10.0.0.1/24", "dev", "eth1"]
        );
        assert_eq!(
            split(r#"sh -c 'echo $HOME && ls' "a \"b\"" c\ d ''"#).unwrap(),
            ["sh", "-c", "echo $HOME && ls", "a \"b\"", "c d", ""]
        );
        assert!(split("sh -c 'oops").is_err());
        assert!(split("oops\\").is_err());
    }
}
