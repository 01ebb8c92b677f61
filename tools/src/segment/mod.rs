//! `tern segment …`: look at, check and repair a data directory offline.
//!
//! * `inspect` prints what is in a segment, a consume-queue file or a whole directory.
//! * `verify` checks every record and entry and exits non-zero naming each problem.
//! * `repair` runs the engine's recovery on the directory: a dry run (in memory) by default,
//!   for real with `--apply`.
//!
//! `inspect` and `verify` only read (files opened read-only, the `LOCK` never taken), so they work
//! on a directory a running engine has open. `repair` refuses a directory that an engine holds.

mod files;
mod inspect;
mod repair;
mod verify;

use clap::Subcommand;

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Print the records of a commitlog segment, the entries of a consume-queue file, or a data
    /// directory's files followed by every record of its commitlog.
    ///
    /// Opens files read-only and never takes the directory's LOCK: safe on a directory that a
    /// running engine has open, and on a copy.
    Inspect(inspect::InspectArgs),
    /// Check every record CRC, every consume-queue entry against its record, offsets and file
    /// names; exit 1 naming each problem with its file and byte offset.
    ///
    /// Read-only, like inspect.
    Verify(verify::VerifyArgs),
    /// Do what the engine's crash recovery would do, offline: cut a torn tail, rebuild missing
    /// consume-queue entries, remove entries that point past the end.
    ///
    /// Without --apply nothing on disk changes: the recovery runs on an in-memory copy and the
    /// differences are printed. Refuses a directory that an engine holds open (DIR/LOCK).
    Repair(repair::RepairArgs),
}

pub fn run(cmd: SegmentCommand) -> anyhow::Result<Outcome> {
    match cmd {
        SegmentCommand::Inspect(args) => inspect::run(&args),
        SegmentCommand::Verify(args) => verify::run(&args),
        SegmentCommand::Repair(args) => repair::run(&args),
    }
}
