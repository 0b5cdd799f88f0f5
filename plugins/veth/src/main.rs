fn main() {
    berth_cni::run(veth::Veth::default())
}
