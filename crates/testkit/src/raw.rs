//! A raw frame client for what real clients cannot send: wrong protocol headers, oversize or
//! malformed frames, frames on closed channels.
