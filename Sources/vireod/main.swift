print("vireod")
