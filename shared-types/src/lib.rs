//! Wire types shared by the edge (`slc-detector`) and the cloud (`slc-reasoner`).
