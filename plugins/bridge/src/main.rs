fn main() {
    berth_cni::run(bridge::Bridge::default())
}
