use mproc::task;

#[task]
const fn double(x: u64) -> u64 {
    x * 2
}

#[task]
unsafe fn read(addr: usize) -> u8 {
    unsafe { *(addr as *const u8) }
}

#[task]
extern "C" fn triple(x: u64) -> u64 {
    x * 3
}

fn main() {}
