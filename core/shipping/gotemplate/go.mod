module tunewiz/gotemplate

go 1.19
