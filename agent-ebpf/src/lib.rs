#![no_std]
// An empty library target: `agent`'s build script depends on it so cargo rebuilds the kernel
// object when this crate changes.
