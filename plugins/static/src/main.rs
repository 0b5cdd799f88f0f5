fn main() {
    berth_cni::run(static_ipam::Static)
}
