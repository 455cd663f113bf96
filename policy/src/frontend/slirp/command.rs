//! Shell-word splitting of a guest forward's command, as GLib (and so libslirp) does it.

/// Why a guest forward's command has no argv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SplitError {
    UnterminatedQuote,
    TrailingBackslash,
    /// GLib refuses a `#` that starts a comment as the very last character.
    TrailingHash,
    Empty,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitError::UnterminatedQuote => "the command has an unterminated quote",
            SplitError::TrailingBackslash => "the command ends in a lone backslash",
            SplitError::TrailingHash => {
                "the command ends in '#', which GLib's shell parser (slirp's) refuses"
            }
            SplitError::Empty => "the command is empty",
        })
    }
}

/// Where [`split_command`] is inside the text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SplitMode {
    Plain,
    /// After an unquoted backslash.
    Escaped,
    SingleQuoted,
    DoubleQuoted,
    /// After a backslash inside double quotes.
    DoubleEscaped,
    /// Right after a `#` that starts a comment.
    CommentStart,
    Comment,
}

/// Split a command into words as GLib's `g_shell_parse_argv` does, since libslirp runs a
/// guest forward's command through it: words end at unquoted blanks (space, tab, newline);
/// `'…'` keeps everything; `"…"` keeps everything but `\` before `$`, `` ` ``, `"`, `\` or
/// newline; an unquoted `\` keeps the next character (and drops a newline); quoted and plain
/// parts of one word join up. A `#` at the start or after a space or newline begins a comment
/// up to and including the next newline. No expansions of any kind.
pub(crate) fn split_command(command: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    // `Some` once a word has begun, even if it stays empty (`''` is one empty word).
    let mut word: Option<String> = None;
    let mut mode = SplitMode::Plain;
    let mut prev = None;
    for c in command.chars() {
        mode = match mode {
            SplitMode::Plain => match c {
                ' ' | '\t' | '\n' => {
                    words.extend(word.take());
                    SplitMode::Plain
                }
                '\'' => {
                    word.get_or_insert_default();
                    SplitMode::SingleQuoted
                }
                '"' => {
                    word.get_or_insert_default();
                    SplitMode::DoubleQuoted
                }
                '\\' => SplitMode::Escaped,
                // GLib looks at the raw previous character only: not a tab, and an escaped
                // space counts.
                '#' if matches!(prev, None | Some(' ' | '\n')) => SplitMode::CommentStart,
                _ => {
                    word.get_or_insert_default().push(c);
                    SplitMode::Plain
                }
            },
            SplitMode::Escaped => {
                if c != '\n' {
                    word.get_or_insert_default().push(c);
                }
                SplitMode::Plain
            }
            SplitMode::SingleQuoted => {
                if c == '\'' {
                    SplitMode::Plain
                } else {
                    word.get_or_insert_default().push(c);
                    SplitMode::SingleQuoted
                }
            }
            SplitMode::DoubleQuoted => match c {
                '"' => SplitMode::Plain,
                '\\' => SplitMode::DoubleEscaped,
                _ => {
                    word.get_or_insert_default().push(c);
                    SplitMode::DoubleQuoted
                }
            },
            SplitMode::DoubleEscaped => {
                let w = word.get_or_insert_default();
                if !matches!(c, '$' | '`' | '"' | '\\' | '\n') {
                    w.push('\\');
                }
                w.push(c);
                SplitMode::DoubleQuoted
            }
            SplitMode::CommentStart | SplitMode::Comment => {
                if c == '\n' {
                    SplitMode::Plain
                } else {
                    SplitMode::Comment
                }
            }
        };
        prev = Some(c);
    }
    match mode {
        SplitMode::SingleQuoted | SplitMode::DoubleQuoted | SplitMode::DoubleEscaped => {
            return Err(SplitError::UnterminatedQuote);
        }
        SplitMode::Escaped => return Err(SplitError::TrailingBackslash),
        SplitMode::CommentStart => return Err(SplitError::TrailingHash),
        SplitMode::Plain | SplitMode::Comment => {}
    }
    words.extend(word);
    if words.is_empty() {
        return Err(SplitError::Empty);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_as_glib_does() {
        let cases: &[(&str, &[&str])] = &[
            ("netcat 127.0.0.1 4321", &["netcat", "127.0.0.1", "4321"]),
            ("  cat\t\t-u \n x  ", &["cat", "-u", "x"]),
            (
                "sh -c 'echo $HOME; ls *'",
                &["sh", "-c", "echo $HOME; ls *"],
            ),
            ("a\"b c\"d", &["ab cd"]),
            ("'it''s' \"\"", &["its", ""]),
            (r#"echo "a\"b\\c\$d\`e\x""#, &["echo", r#"a"b\c$d`e\x"#]),
            (r"echo 'a\b' \'c\ d\\", &["echo", r"a\b", "'c d\\"]),
            ("echo a\\\nb", &["echo", "ab"]),
            ("echo \"a\\\nb\"", &["echo", "a\nb"]),
            ("~/bin/x $PATH", &["~/bin/x", "$PATH"]),
            ("echo a#b #comment\nnext", &["echo", "a#b", "next"]),
            (
                "echo\t#tab-is-no-comment-start",
                &["echo", "#tab-is-no-comment-start"],
            ),
            ("echo a\\ #x\nb", &["echo", "a b"]),
            ("#only a comment\ncat", &["cat"]),
            ("echo ##", &["echo"]),
        ];
        for (command, want) in cases {
            let want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
            assert_eq!(split_command(command), Ok(want), "{command:?}");
        }
        let bad = [
            ("", SplitError::Empty),
            (" \t\n", SplitError::Empty),
            ("#x", SplitError::Empty),
            ("\\\n", SplitError::Empty),
            ("it's", SplitError::UnterminatedQuote),
            ("echo \"a", SplitError::UnterminatedQuote),
            ("echo \"a\\\"", SplitError::UnterminatedQuote),
            ("echo a\\", SplitError::TrailingBackslash),
            ("echo #", SplitError::TrailingHash),
        ];
        for (command, want) in bad {
            assert_eq!(split_command(command), Err(want), "{command:?}");
        }
    }
}
