fn main() {
    berth_cni::run(loopback::Loopback)
}
