//! Seed 002, "Getting started with multiprocessing": a function run in a
//! separate process, then a doubler run by five processes, first reporting
//! their pids, then their names — the default `Process-N` and a custom
//! `"Test"`.
//!
//! The seed's last listing is cut short; it follows the well-known original
//! (Mike Driscoll, *Python 201*), which creates one `Process` that it never
//! starts before the loop — so the first started process is `Process-2`,
//! because creating a process takes a number whether or not it starts.

use mproc::prelude::*;

/// Runs in a separate process.
#[mproc::task]
fn my_function() {
    println!("This is running in a separate process");
}

/// A doubling function that can be used by a process.
#[mproc::task]
fn doubler(number: i64) {
    let result = number * 2;
    let proc = std::process::id();
    println!("{number} doubled to {result} by process id: {proc}");
}

/// The same, reporting the process's name.
#[mproc::task]
fn doubler_named(number: i64) {
    let result = number * 2;
    let proc_name = current_process().name().to_string();
    println!("{number} doubled to {result} by: {proc_name}");
}

fn main() -> Result<(), mproc::Error> {
    // Create a Process object
    let my_process = Process::new(my_function, ());
    // Start the process
    let my_process = my_process.start()?;
    // Wait for the process to complete (optional)
    my_process.join()?;
    println!("Main process continues to run");

    println!("{}", std::any::type_name::<Process>());

    let numbers = [5, 10, 15, 20, 25];
    let mut procs = Vec::new();
    for (index, number) in numbers.into_iter().enumerate() {
        println!("{index} {number}");
        let proc = Process::new(doubler, number).start()?;
        procs.push(proc);
    }
    for proc in &procs {
        proc.join()?;
    }

    // Names: the default `Process-N`, and a custom one.
    let mut procs = Vec::new();
    let _proc = Process::new(doubler_named, 5); // created, never started

    for number in numbers {
        let proc = Process::new(doubler_named, number).start()?;
        procs.push(proc);
    }

    let proc = Process::new(doubler_named, 2).name("Test").start()?;
    procs.push(proc);

    for proc in &procs {
        proc.join()?;
    }
    Ok(())
}
