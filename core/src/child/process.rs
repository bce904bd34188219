//! `Process` mode in the child: read the start message, run the task once,
//! exit with 0 (or 1 if it failed).

use mproc_transport::{ByteStream, FrameReader};

use super::ChildError;
use crate::error::TaskError;
use crate::identity::ProcessInfo;
use crate::protocol::{decode, StartProcess, PROTOCOL_VERSION};

/// In a child started by `Process`: reads the start message, runs the task
/// and returns the exit code.
pub(crate) fn run_child(chan: &dyn ByteStream) -> Result<i32, ChildError> {
    let mut reader = FrameReader::new(mproc_transport::MAX_FRAME_LIMIT);
    let frame = reader.next_frame(chan).map_err(ChildError::Handshake)?;
    let msg: StartProcess = decode(frame).map_err(ChildError::Malformed)?;
    if msg.version != PROTOCOL_VERSION || msg.fingerprint != crate::registry::fingerprint() {
        return Err(ChildError::OtherBuild);
    }
    crate::sys::set_thread_name(&msg.name);
    crate::sys::set_process_name(&msg.name);
    crate::identity::set_child_identity(
        msg.name.clone(),
        msg.ident,
        ProcessInfo::new(msg.parent_name, msg.parent_pid),
    );
    Ok(run_target(&msg.name, &msg.task, &msg.args))
}

fn run_target(name: &str, task: &str, args: &[u8]) -> i32 {
    let Some(entry) = crate::registry::lookup(task) else {
        eprintln!(
            "mproc: {name}: {}",
            TaskError::UnknownTask { name: task.into() }
        );
        return 1;
    };
    let err = match (entry.run)(args).block() {
        Ok(items) => match items.single_outcome() {
            Ok(()) => return 0,
            Err(e) => e,
        },
        Err(e) => e,
    };
    match err {
        // The panic hook has printed the message already.
        TaskError::Panicked { .. } => {}
        e => eprintln!("mproc: {name}: {e}"),
    }
    1
}
