fn main() {
    berth_cni::run(portmap::Portmap)
}
