"""Files every layer writes or reads: atomic writes (``atomic``) and model folders
(``model_folder``). Below data, training and inference, so that none of them imports another
for these."""
