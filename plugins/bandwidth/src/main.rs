fn main() {
    berth_cni::run(bandwidth::Bandwidth::default())
}
