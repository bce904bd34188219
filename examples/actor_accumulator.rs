//! An actor shared by the tasks of a `map`: each task counts the words of
//! one line and adds its counts to a `WordTotals` actor through the
//! `ActorRef` it was passed; when the map is done the program reads the
//! totals from the same actor.
//!
//! ```text
//! cargo run --release --example actor_accumulator
//! ```
//!
//! The actor applies the calls of every worker one at a time, so no update
//! is lost and nobody takes a lock; the tasks call it directly, not through
//! this program.

use std::collections::{BTreeSet, HashMap};

use mproc::prelude::*;

const TEXT: &str = "\
It was the best of times, it was the worst of times,
it was the age of wisdom, it was the age of foolishness,
it was the epoch of belief, it was the epoch of incredulity,
it was the season of Light, it was the season of Darkness,
it was the spring of hope, it was the winter of despair,
we had everything before us, we had nothing before us,
we were all going direct to Heaven, we were all going direct the other way";

/// Word counts reported by every task.
#[mproc::actor]
struct WordTotals {
    counts: HashMap<String, u64>,
    lines: u64,
    reporters: BTreeSet<u32>,
}

#[mproc::actor]
impl WordTotals {
    fn new() -> Self {
        WordTotals {
            counts: HashMap::new(),
            lines: 0,
            reporters: BTreeSet::new(),
        }
    }
    /// Adds one line's counts, reported by process `pid`.
    fn add(&mut self, pid: u32, counts: HashMap<String, u64>) {
        for (word, n) in counts {
            *self.counts.entry(word).or_insert(0) += n;
        }
        self.lines += 1;
        self.reporters.insert(pid);
    }
    /// The `k` most frequent words, most frequent first.
    fn top(&self, k: usize) -> Vec<(String, u64)> {
        let mut all: Vec<_> = self.counts.iter().map(|(w, n)| (w.clone(), *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
    /// Lines reported, total words, and the processes that reported.
    fn summary(&self) -> (u64, u64, Vec<u32>) {
        let words = self.counts.values().sum();
        (self.lines, words, self.reporters.iter().copied().collect())
    }
}

/// Counts the words of `line`, reports them to `totals`, and returns how
/// many there were.
#[mproc::task]
async fn count_line(totals: ActorRef<WordTotals>, line: String) -> Result<u64, Failure> {
    let mut counts = HashMap::new();
    for word in line.split_whitespace() {
        let word = word
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        if !word.is_empty() {
            *counts.entry(word).or_insert(0u64) += 1;
        }
    }
    let words = counts.values().sum();
    totals.add(std::process::id(), counts).await?;
    Ok(words)
}

#[tokio::main]
async fn main() -> Result<(), mproc::Error> {
    let executor = Executor::new(2).await?;
    let totals = WordTotals::spawn(&executor, ()).await?;

    // Every task gets a clone of the reference.
    let lines: Vec<_> = TEXT
        .lines()
        .map(|l| (totals.clone(), l.to_string()))
        .collect();
    let per_line: Vec<Result<u64, Failure>> = executor.map(count_line, lines).try_collect().await?;
    let mut counted = 0;
    for words in per_line {
        counted += words?;
    }

    let (lines, words, reporters) = totals.summary().await?;
    println!("{lines} lines, {words} words reported by worker processes {reporters:?}");
    println!("the tasks returned {counted} words in all");
    for (word, n) in totals.top(5).await? {
        println!("{n:>3}  {word}");
    }
    totals.stop().await?;
    executor.shutdown().await;
    Ok(())
}
