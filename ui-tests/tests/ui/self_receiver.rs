use mproc::task;

struct Counter(u32);

impl Counter {
    #[task]
    fn get(&self) -> u32 {
        self.0
    }
}

fn main() {}
