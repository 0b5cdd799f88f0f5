fn main() {
    berth_cni::run(tuning::Tuning)
}
