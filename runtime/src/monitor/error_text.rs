//! Error messages with their causes: libcontainer's errors often say only "io error" or
//! "syscall error" and keep the detail (which file, which errno) in their source chain.

use std::error::Error;

/// `error` followed by each cause in its source chain that adds something, joined by ": ".
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let part = current.to_string();
        // Transparent wrappers repeat their source's text.
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<Box<dyn Error + 'static>>);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn causes_follow_the_vague_top_level_message() {
        let errno = std::io::Error::from_raw_os_error(nix::libc::EPERM);
        let errno_text = errno.to_string();
        let error = Wrapper(
            "io error",
            Some(Box::new(Wrapper(
                "write oom_score_adj",
                Some(Box::new(errno)),
            ))),
        );
        assert_eq!(
            describe(&error),
            format!("io error: write oom_score_adj: {errno_text}")
        );
    }

    #[test]
    fn transparent_layers_are_not_repeated() {
        let error = Wrapper(
            "no such file",
            Some(Box::new(Wrapper("no such file", None))),
        );
        assert_eq!(describe(&error), "no such file");
    }
}
