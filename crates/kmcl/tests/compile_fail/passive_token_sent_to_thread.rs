// An IRQL token proves the level of one context: it cannot be moved to another thread.
use kmcl::irql::Passive;

fn main() {
    let passive = Passive::try_current().expect("passive");
    std::thread::spawn(move || {
        let _p: Passive = passive;
    });
}
