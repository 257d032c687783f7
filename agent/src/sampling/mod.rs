//! Which traces are kept: head sampling decides as a request starts, from the trace id and the
//! parent's flag (`head`); tail sampling decides once a trace's spans are in, from what they
//! say (`tail`).
pub mod head;
pub mod tail;
