fn main() {
    berth_cni::run(macvlan::Macvlan::default())
}
