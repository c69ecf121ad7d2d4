print("vireo")
