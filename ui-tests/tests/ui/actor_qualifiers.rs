#[mproc::actor]
struct Device {
    reg: u64,
}

#[mproc::actor]
impl Device {
    fn new() -> Self {
        Device { reg: 0 }
    }

    const fn read(&self) -> u64 {
        self.reg
    }

    unsafe fn poke(&mut self, value: u64) {
        self.reg = value;
    }

    extern "C" fn peek(&self) -> u64 {
        self.reg
    }
}

fn main() {}
