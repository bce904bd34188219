use mproc::task;

#[task]
fn count_chars(s: &str) -> usize {
    s.chars().count()
}

#[task]
fn join(words: Vec<&'static str>, sep: String) -> String {
    words.join(&sep)
}

#[task]
fn greeting() -> &'static str {
    "hello"
}

fn main() {}
