print("vireo-vmm")
