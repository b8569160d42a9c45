//! macOS system calls of the data plane, under the names of `sys_linux.rs`.
//! macOS has no `recvmmsg`/`sendmmsg` and no UDP GSO or GRO: a batch is one
//! datagram per call, so the device code keeps one shape everywhere.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use super::batch::{Datagrams, Slots, BATCH};

/// Whether a run of datagrams can leave in one send.
#[cfg(test)]
pub const GSO: bool = false;

pub struct RecvHeaders;

impl RecvHeaders {
    pub fn new() -> RecvHeaders {
        RecvHeaders
    }
}

pub struct SendHeaders;

impl SendHeaders {
    pub fn new() -> SendHeaders {
        SendHeaders
    }
}

/// No UDP GRO on macOS.
pub fn enable_gro(_: &socket2::Socket) {}

pub fn recv(
    fd: RawFd,
    _: &mut RecvHeaders,
    slots: &mut Slots,
    lens: &mut [usize; BATCH],
    strides: &mut [usize; BATCH],
    from: &mut [Option<SocketAddr>; BATCH],
) -> io::Result<usize> {
    // SAFETY: the caller holds the socket open for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    // SAFETY: recv_from writes initialised bytes only; a MaybeUninit view of
    // an initialised buffer.
    let buf = unsafe { &mut *(slots.get_mut(0) as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, addr) = sock.recv_from(buf)?;
    lens[0] = n;
    strides[0] = 0;
    from[0] = addr.as_socket();
    Ok(1)
}

pub fn send(fd: RawFd, _: &mut SendHeaders, d: &Datagrams<'_>, first: usize) -> io::Result<usize> {
    // SAFETY: the caller holds the socket open for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let dest = d.to[first].expect("committed datagrams have a destination");
    sock.send_to(d.get(first), &dest.into())?;
    Ok(1)
}

/// No SO_*BUFFORCE here: ask, and take what the kernel grants.
pub fn tune_buffers(s: &socket2::Socket, size: usize) {
    let _ = s.set_recv_buffer_size(size);
    let _ = s.set_send_buffer_size(size);
}

/// fwmark is a Linux routing feature; elsewhere it is accepted and ignored,
/// as wireguard-go does.
pub fn set_mark(_: &socket2::Socket, _: u32) -> io::Result<()> {
    Ok(())
}
