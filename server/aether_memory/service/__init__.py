"""The use cases: what each RPC does, over protocols the stores implement. Servicers translate
protos and call these; these call the stores and the domain rules."""
